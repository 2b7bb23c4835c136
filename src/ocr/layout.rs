//! Reading order of detected lines. A page is cut recursively at its widest blank band (an XY
//! cut): across the page between blocks, down the page between columns, so the lines of one
//! column are read before the next column's. A cut down the page is refused where it would tear
//! rows apart — a receipt's items from their prices, a form's labels from their values: when the
//! two sides' lines sit on the same rows, they are read row by row unless both sides are
//! columns of text (several lines, each wide). Where no blank band is left, lines go top to
//! bottom and left to right along a row.

use super::Quad;

/// Axis-aligned bounds of one line box, and the height of its text (a turned box's bounds are
/// taller than its text).
#[derive(Clone, Copy, Debug)]
struct Bounds {
    left: f32,
    top: f32,
    right: f32,
    bottom: f32,
    text_height: f32,
}

impl Bounds {
    fn of(quad: &Quad) -> Self {
        let (left, top, right, bottom) = quad.bounds();
        Self {
            left,
            top,
            right,
            bottom,
            text_height: quad.height(),
        }
    }

    fn center_y(&self) -> f32 {
        (self.top + self.bottom) / 2.0
    }

    fn height(&self) -> f32 {
        self.text_height
    }

    fn width(&self) -> f32 {
        self.right - self.left
    }
}

/// Both sides of a column cut count as columns of text when each has at least this many lines…
const MIN_COLUMN_LINES: usize = 3;
/// …whose median width is at least this share of the region's width.
const MIN_COLUMN_WIDTH_SHARE: f32 = 0.3;
/// A gutter narrower than this many line heights is the space between words, not columns.
const MIN_GUTTER_LINE_HEIGHTS: f32 = 0.5;

/// Puts line boxes in reading order (see the module documentation).
pub fn reading_order(quads: &mut [Quad]) {
    let bounds: Vec<Bounds> = quads.iter().map(Bounds::of).collect();
    let mut heights: Vec<f32> = bounds.iter().map(Bounds::height).collect();
    heights.sort_by(f32::total_cmp);
    let min_gutter =
        heights.get(heights.len() / 2).copied().unwrap_or(0.0) * MIN_GUTTER_LINE_HEIGHTS;
    let mut order = Vec::with_capacity(quads.len());
    order_region((0..quads.len()).collect(), &bounds, min_gutter, &mut order);
    let ordered: Vec<Quad> = order.iter().map(|&i| quads[i]).collect();
    quads.copy_from_slice(&ordered);
}

fn order_region(items: Vec<usize>, bounds: &[Bounds], min_gutter: f32, out: &mut Vec<usize>) {
    if items.len() <= 1 {
        out.extend(items);
        return;
    }
    let across = widest_gap(&items, |i| (bounds[i].top, bounds[i].bottom));
    let down = widest_gap(&items, |i| (bounds[i].left, bounds[i].right))
        .filter(|gap| gap.1 - gap.0 >= min_gutter);
    if let Some((gap_left, gap_right)) = down {
        let wider_than_across =
            across.is_none_or(|(top, bottom)| gap_right - gap_left >= bottom - top);
        let middle = (gap_left + gap_right) / 2.0;
        let (left, right): (Vec<usize>, Vec<usize>) =
            items.iter().partition(|&&i| bounds[i].right <= middle);
        if wider_than_across && reads_as_columns(&left, &right, bounds) {
            order_region(left, bounds, min_gutter, out);
            order_region(right, bounds, min_gutter, out);
            return;
        }
    }
    if let Some((gap_top, gap_bottom)) = across {
        let middle = (gap_top + gap_bottom) / 2.0;
        let (above, below): (Vec<usize>, Vec<usize>) =
            items.iter().partition(|&&i| bounds[i].bottom <= middle);
        order_region(above, bounds, min_gutter, out);
        order_region(below, bounds, min_gutter, out);
        return;
    }
    out.extend(rows_left_to_right(items, bounds));
}

/// The widest stretch that no item's `[start, end)` extent covers, between the first start and
/// the last end; `None` when the extents overlap into one.
fn widest_gap(items: &[usize], extent: impl Fn(usize) -> (f32, f32)) -> Option<(f32, f32)> {
    let mut extents: Vec<(f32, f32)> = items.iter().map(|&i| extent(i)).collect();
    extents.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut covered_to = extents.first()?.1;
    let mut widest: Option<(f32, f32)> = None;
    for &(start, end) in &extents[1..] {
        if start > covered_to && widest.is_none_or(|(a, b)| start - covered_to > b - a) {
            widest = Some((covered_to, start));
        }
        covered_to = covered_to.max(end);
    }
    widest
}

/// Whether the two sides of a cut down the region are read one after the other: yes unless
/// their lines share rows, and then only when both are columns of text.
fn reads_as_columns(left: &[usize], right: &[usize], bounds: &[Bounds]) -> bool {
    let (fewer, more) = if left.len() <= right.len() {
        (left, right)
    } else {
        (right, left)
    };
    let partnered = fewer
        .iter()
        .filter(|&&i| {
            more.iter().any(|&j| {
                let tolerance = 0.25 * bounds[i].height().min(bounds[j].height());
                (bounds[i].center_y() - bounds[j].center_y()).abs() < tolerance
            })
        })
        .count();
    let share_rows = partnered * 2 > fewer.len();
    if !share_rows {
        return true;
    }
    let (region_left, region_right) = left
        .iter()
        .chain(right)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, r), &i| {
            (l.min(bounds[i].left), r.max(bounds[i].right))
        });
    let region_width = (region_right - region_left).max(1.0);
    let is_text_column = |side: &[usize]| {
        let mut widths: Vec<f32> = side.iter().map(|&i| bounds[i].width()).collect();
        widths.sort_by(f32::total_cmp);
        side.len() >= MIN_COLUMN_LINES
            && widths[widths.len() / 2] >= MIN_COLUMN_WIDTH_SHARE * region_width
    };
    is_text_column(left) && is_text_column(right)
}

/// Top to bottom; boxes whose centres are closer than half a line height are one row, read
/// left to right.
fn rows_left_to_right(mut items: Vec<usize>, bounds: &[Bounds]) -> Vec<usize> {
    items.sort_by(|&a, &b| bounds[a].center_y().total_cmp(&bounds[b].center_y()));
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 {
            let (above, here) = (bounds[items[j - 1]], bounds[items[j]]);
            let same_row = (here.center_y() - above.center_y()).abs()
                < 0.5 * above.height().min(here.height());
            if same_row && here.left < above.left {
                items.swap(j - 1, j);
                j -= 1;
            } else {
                break;
            }
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quad(left: f32, top: f32, right: f32, bottom: f32) -> Quad {
        Quad::from_corners([[right, bottom], [left, top], [left, bottom], [right, top]])
    }

    /// Lays out boxes named by their text, shuffles them, orders them, returns the names.
    fn read(boxes: &[(&'static str, [f32; 4])]) -> Vec<&'static str> {
        let mut named: Vec<(&str, Quad)> = boxes
            .iter()
            .map(|(name, [l, t, r, b])| (*name, quad(*l, *t, *r, *b)))
            .collect();
        named.reverse();
        let middle = named.len() / 2;
        named.swap(0, middle);
        let mut quads: Vec<Quad> = named.iter().map(|(_, q)| *q).collect();
        reading_order(&mut quads);
        quads
            .iter()
            .map(|q| {
                named
                    .iter()
                    .find(|(_, n)| n == q)
                    .map(|(name, _)| *name)
                    .unwrap_or("?")
            })
            .collect()
    }

    #[test]
    fn words_on_two_lines_read_line_by_line() {
        // The right word of the first line sits a little lower than its neighbour.
        let order = read(&[
            ("first-left", [10.0, 10.0, 150.0, 30.0]),
            ("first-right", [200.0, 13.0, 300.0, 33.0]),
            ("second-left", [10.0, 61.0, 150.0, 81.0]),
            ("second-right", [200.0, 60.0, 300.0, 80.0]),
        ]);
        assert_eq!(
            order,
            ["first-left", "first-right", "second-left", "second-right"]
        );
    }

    #[test]
    fn two_columns_between_a_heading_and_a_footer_read_column_by_column() {
        // The right column's lines sit between the left column's, as in a scanned brochure.
        let mut boxes = vec![("heading", [100.0, 10.0, 900.0, 50.0])];
        let left = ["l1", "l2", "l3", "l4"];
        let right = ["r1", "r2", "r3", "r4"];
        for (row, name) in left.iter().enumerate() {
            let top = 100.0 + 40.0 * row as f32;
            boxes.push((name, [100.0, top, 480.0, top + 30.0]));
        }
        for (row, name) in right.iter().enumerate() {
            let top = 112.0 + 40.0 * row as f32;
            boxes.push((name, [520.0, top, 900.0, top + 30.0]));
        }
        boxes.push(("footer", [100.0, 300.0, 900.0, 330.0]));
        let order = read(&boxes);
        assert_eq!(
            order,
            ["heading", "l1", "l2", "l3", "l4", "r1", "r2", "r3", "r4", "footer"]
        );
    }

    #[test]
    fn aligned_columns_of_text_still_read_column_by_column() {
        let mut boxes = Vec::new();
        for row in 0..4 {
            let top = 40.0 * row as f32;
            boxes.push((["a1", "a2", "a3", "a4"][row], [0.0, top, 400.0, top + 30.0]));
            boxes.push((
                ["b1", "b2", "b3", "b4"][row],
                [450.0, top, 850.0, top + 30.0],
            ));
        }
        assert_eq!(
            read(&boxes),
            ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"]
        );
    }

    #[test]
    fn a_receipt_keeps_each_price_with_its_item() {
        let items = ["coffee", "croissant", "orange juice", "total"];
        let prices = ["2.50", "3.90", "4.20", "10.60"];
        let mut boxes = Vec::new();
        for row in 0..4 {
            let top = 30.0 * row as f32;
            let width = [120.0, 180.0, 250.0, 100.0][row];
            boxes.push((items[row], [20.0, top, 20.0 + width, top + 22.0]));
            boxes.push((prices[row], [400.0, top + 1.0, 460.0, top + 23.0]));
        }
        assert_eq!(
            read(&boxes),
            [
                "coffee",
                "2.50",
                "croissant",
                "3.90",
                "orange juice",
                "4.20",
                "total",
                "10.60"
            ]
        );
    }

    #[test]
    fn overlapping_lines_of_a_tilted_photo_read_top_to_bottom() {
        // Tilted lines' bounds overlap, leaving no blank band to cut.
        let order = read(&[
            ("one", [0.0, 0.0, 500.0, 40.0]),
            ("two", [0.0, 30.0, 500.0, 70.0]),
            ("three", [0.0, 60.0, 500.0, 100.0]),
        ]);
        assert_eq!(order, ["one", "two", "three"]);
    }
}
