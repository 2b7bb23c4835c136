//! PP-OCRv6 small on real pictures (tests/images, licences in its README): a map with turned
//! labels, a scanned brochure, a photo of typewritten text. The expected lines were checked by
//! eye against the images.

mod common;

use std::path::PathBuf;

use quantlab::{
    ocr::{image_input, ppocr::PpOcr, OcrEngine},
    registry::Registry,
};

fn read(file: &str) -> Vec<String> {
    let registry = Registry::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models.toml"),
        &common::models_dir(),
    )
    .expect("models.toml loads");
    let entry = registry.ocr("ppocr-v6-small").expect("declared");
    assert!(
        registry.ocr_unavailability(entry).is_none(),
        "run `quantlab models fetch ppocr-v6-small` (scripts/test.sh does)"
    );
    let engine = PpOcr::load(&registry.ocr_dir(entry)).expect("loads");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/images")
        .join(file);
    let bytes = std::fs::read(&path).expect("test image present");
    let upright = image_input::decode(&bytes).expect("decodes");
    let reading = engine.read(&upright).expect("reads");
    reading.lines.into_iter().map(|l| l.text).collect()
}

fn missing<'a>(read: &[String], expected: &[&'a str]) -> Vec<&'a str> {
    expected
        .iter()
        .copied()
        .filter(|line| !read.iter().any(|r| r == line))
        .collect()
}

#[test]
fn a_map_gives_its_place_names_including_turned_ones() {
    let lines = read("baiona.png");
    let names = [
        "Bokale",
        "Tarnose",
        "Lehuntze",
        "Mugerre",
        "Errobi",
        "Hiriburu",
        "Angelu",
        "Milafranga",
        "Basusarri",
        "BAIONA",
        "Komunikabideak",
        "Autobideak",
        "Errepide nagusiak",
        "Trenbideak",
        "Eguneratua: 2014/10/04",
    ];
    assert_eq!(missing(&lines, &names), Vec::<&str>::new(), "{lines:?}");
    // The river's name is written along it, turned, twice.
    let river = lines.iter().filter(|l| l.starts_with("Attur")).count();
    assert!(river >= 1, "{lines:?}");
}

#[test]
fn a_scanned_brochure_reads_line_for_line_and_column_by_column() {
    let lines = read("linn.png");
    let expected = [
        "The LinnSequencer",
        "32 Track MIDI Sequence Recorder",
        "FORWARD, REWIND, and LOCATE controls.",
        "• One or all tracks may be TRANSPOSED at the touch of a key.",
        "• Exclusive real-time ERASE function makes editing FAST.",
        "• Optional SMPTE time code synchronization.",
        "Recording a Sequence",
        "Creating a Song",
        "To record a sequence, simply press RECORD and PLAY,",
        "first verse between the second chorus and the bridge.",
    ];
    assert_eq!(missing(&lines, &expected), Vec::<&str>::new(), "{lines:?}");
    assert!(lines.len() >= 40, "{}", lines.len());
    // The middle of the page is two columns between full-width blocks: the left column is
    // read to its end before the right one starts, and the page's last block comes after both.
    let at = |start: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in {lines:?}"))
    };
    let in_order = [
        "• Optional remote control.",
        "Recording a Sequence",
        "To record a sequence",
        "Editing",
        "tion. To overdub notes",
        "simply use LOCATE",
        "Creating a Song",
        "Composition Without Compromise",
        "music. See your Linn dealer",
        "Additional Features",
    ];
    let positions: Vec<usize> = in_order.iter().map(|l| at(l)).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{in_order:?} at {positions:?} in {lines:?}"
    );
}

#[test]
fn a_photo_of_typewritten_text_reads_line_for_line() {
    let lines = read("typewriter.png");
    let expected = [
        "Linzensoep à la Waterman",
        "3 liter water",
        "laurier, kruidnagel, kerrie, zout",
        "de linzen voegen, zonder het water waarin",
        "de uien bakken met laurier en kruidnagel.",
        "gaar zijn is de soep klaar.",
    ];
    assert_eq!(missing(&lines, &expected), Vec::<&str>::new(), "{lines:?}");
}
