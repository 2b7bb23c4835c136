import { expect, test } from "@playwright/test";

test("a bench run shows its progress, then a table and three charts drawn from its results", async ({ page, request }, info) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto("/bench");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByRole("link", { name: "Bench" })).toHaveAttribute("aria-current", "page");
  await expect(page.getByTestId("bench-machine")).toContainText("logical cores");
  await expect(page.locator('input[type=checkbox][value="smollm2-135m-instruct"]')).toBeChecked();
  for (const [id, value] of [["bench-repeats", "1"], ["bench-tokens", "8"], ["bench-ppl-tokens", "128"]]) {
    await page.getByTestId(id).fill(value);
    await page.getByTestId(id).dispatchEvent("change");
  }
  const before = (await (await request.get("/api/bench/results")).json()).runs.length;
  await page.getByTestId("bench-run").click();
  await expect(page.getByTestId("bench-progress")).toBeVisible();
  await expect(page.getByTestId("bench-cancel")).toBeVisible();
  await expect(page.getByTestId("bench-progress")).toBeHidden({ timeout: 90_000 });

  const runs = (await (await request.get("/api/bench/results")).json()).runs;
  expect(runs.length).toBe(before + 1);
  const model = runs[0].models[0];
  const table = page.getByTestId("bench-table");
  await expect(table.locator("tbody tr").first()).toContainText("smollm2-135m-instruct");
  // The table shows the stored figures, not something else.
  await expect(table).toContainText(model.perplexity.perplexity.toFixed(2));
  await expect(table).toContainText(model.decode_tok_s.median.toFixed(1));
  await expect(page.getByTestId("chart-decode-memory").locator("circle")).toHaveCount(1);
  await expect(page.getByTestId("chart-ppl-bpw").locator("circle")).toHaveCount(1);
  await expect(page.getByTestId("chart-ttft").locator("rect")).toHaveCount(3);
  await expect(page.getByTestId("bench-csv")).toHaveAttribute("href", /format=csv/);
  const csv = await (await request.get("/api/bench/results?format=csv")).text();
  expect(csv.split("\n")[0]).toContain("decode_tok_s");
  expect(csv).toContain(runs[0].id);

  if (info.project.name === "phone") {
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    const width = await page.getByTestId("chart-decode-memory").locator("svg").evaluate((e) => e.getBoundingClientRect().width);
    expect(width).toBeGreaterThan(300); // drawn at about one unit per pixel: 11-unit labels stay readable
    expect(width).toBeLessThanOrEqual(390);
  }
  expect(errors).toEqual([]);
});
