import { expect, test } from "@playwright/test";
import { open } from "./helpers";

test("two models answer one prompt in turn and the summary compares them", async ({ page, request }, info) => {
  await page.goto("/compare");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByRole("link", { name: "Compare" })).toHaveAttribute("aria-current", "page");
  const run = page.getByTestId("compare-run");
  await page.getByTestId("choose-smollm2-135m-instruct").check();
  await expect(run).toBeDisabled(); // one model is not a comparison
  await page.getByTestId("choose-qwen2.5-coder-0.5b-instruct").check();
  const question = `What is the capital of France? (${Math.random().toString(36).slice(2, 8)})`;
  await page.getByTestId("compare-prompt").fill(question);
  await page.getByTestId("compare-max-tokens").fill("24");
  await page.getByTestId("compare-max-tokens").dispatchEvent("change");
  // A short reply streams for a fraction of a second, too briefly to poll for: record every
  // state the two cards pass through instead.
  await page.evaluate(() => {
    const seen: string[][] = [];
    (window as unknown as { liveStates: string[][] }).liveStates = seen;
    const snapshot = () =>
      seen.push([...document.querySelectorAll('[data-testid="compare-card"] [data-testid="live"]')].map((e) => e.textContent ?? ""));
    new MutationObserver(snapshot).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  await run.click();

  const cards = page.getByTestId("compare-card");
  await expect(cards).toHaveCount(2);
  for (const i of [0, 1]) {
    await expect(cards.nth(i).getByTestId("metrics")).toContainText("tok/s", { timeout: 90_000 });
  }
  // One after another: the second waited while the first streamed, and never the other way round.
  const states = await page.evaluate(() => (window as unknown as { liveStates: string[][] }).liveStates);
  const pairs = states.filter((s) => s.length === 2);
  expect(pairs.some(([first, second]) => first.includes("streaming") && second.includes("waiting"))).toBe(true);
  expect(pairs.some(([first, second]) => first.includes("waiting") && second.includes("streaming"))).toBe(false);
  const summary = page.getByTestId("compare-summary");
  await expect(summary.locator("tbody tr")).toHaveCount(2);
  await expect(summary).toContainText("one after another");
  await expect(summary.locator("td.best").first()).toBeVisible();
  await summary.locator("details.share summary").click();
  const markdown = await page.getByTestId("compare-markdown").inputValue();
  expect(markdown).toContain("| Model | Engine | TTFT (ms)");
  expect(markdown).toContain("SmolLM2 135M Instruct");
  expect(markdown).toContain("Qwen2.5 Coder 0.5B Instruct");
  expect(markdown).toMatch(/\*\*[0-9.]+/);
  await expect(run).toHaveText(/Run again/);

  // The comparison is saved as one conversation: the prompt and both replies, with provenance.
  await page.getByTestId("compare-save").click();
  await expect(page.getByTestId("compare-saved")).toContainText("Compare: ");
  const found = await (await request.get(`/api/conversations?q=${encodeURIComponent(question)}`)).json();
  expect(found).toHaveLength(1);
  const saved = await (await request.get(`/api/conversations/${found[0].id}`)).json();
  expect(saved.messages.map((m: { role: string }) => m.role)).toEqual(["user", "assistant", "assistant"]);
  expect(saved.messages[2].model).toBe("qwen2.5-coder-0.5b-instruct");
  expect(saved.messages[2].metrics.decode_tokens_per_s).toBeGreaterThan(0);
  if (info.project.name === "phone") {
    // Cards swipe sideways inside their row; the page itself never scrolls sideways.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    expect(await page.getByTestId("compare-grid").evaluate((e) => getComputedStyle(e).scrollSnapType)).toContain("x");
  }
});

test("the tab bar links Chat and Compare", async ({ page }) => {
  await open(page);
  await page.getByRole("link", { name: "Compare" }).click();
  await expect(page).toHaveURL(/\/compare$/);
  await expect(page.getByTestId("compare-run")).toBeVisible();
});

test("Stop in together mode stops every running model", async ({ page }) => {
  await page.goto("/compare");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  // Two engines on one file: two workers, so the replies really run at the same time.
  await page.getByTestId("choose-smollm2-135m-instruct").check();
  await page.getByTestId("choose-smollm2-135m-instruct-candle").check();
  await page.getByTestId("compare-prompt").fill("Write a very long story about a lighthouse keeper, in many chapters.");
  await page.getByTestId("compare-max-tokens").fill("1500");
  await page.getByTestId("compare-max-tokens").dispatchEvent("change");
  await page.getByTestId("mode-together").check();
  await page.getByTestId("compare-run").click();

  const cards = page.getByTestId("compare-card");
  await expect(cards).toHaveCount(2);
  for (const i of [0, 1]) {
    await expect(cards.nth(i).getByTestId("live")).toContainText("streaming", { timeout: 60_000 });
  }
  await page.getByTestId("compare-stop").click();
  for (const i of [0, 1]) {
    await expect(cards.nth(i).getByTestId("metrics")).toContainText("stopped", { timeout: 15_000 });
  }
  await expect(page.getByTestId("compare-run")).toBeVisible();
  await expect(page.getByTestId("compare-summary")).toContainText("together");
});
