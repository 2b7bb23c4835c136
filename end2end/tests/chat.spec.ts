import { expect, test } from "@playwright/test";
import { open, openSidebarIfPhone, setAdvanced } from "./helpers";

test("the page renders on the server and hydrates without errors", async ({ page }) => {
  const errors = await open(page);
  for (const path of ["/", "/compare", "/bench"]) {
    await page.goto(path);
    // The header (menu, name, every tab) fits the screen: the page never scrolls sideways.
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    expect(width, path).toBeLessThanOrEqual(page.viewportSize()!.width);
  }
  await page.goto("/");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await openSidebarIfPhone(page);
  await expect(page.getByTestId("model-select")).toHaveValue("smollm2-135m-instruct");
  await expect(page.getByTestId("model-card")).toContainText("SmolLM2 135M Instruct");
  await expect(page.getByTestId("model-card")).toContainText("Q4_1");
  // Unavailable models are listed, not hidden.
  await expect(page.locator("#model-select option", { hasText: "unavailable" }).first()).toBeAttached();
  expect(errors).toEqual([]);
});

test("a message streams a reply with its metrics", async ({ page }) => {
  const errors = await open(page);
  await setAdvanced(page, "seed", "42");

  await page.getByTestId("prompt").fill("What is the capital of France?");
  await page.getByTestId("send").click();
  const reply = page.getByTestId("message-assistant").last();
  // Tokens appear while the reply is still streaming.
  await expect(reply).toHaveClass(/streaming/);
  await expect(reply.locator(".md")).not.toBeEmpty();
  await expect(reply.getByTestId("metrics")).toContainText("tok/s", { timeout: 60_000 });
  await expect(reply.getByTestId("metrics")).toContainText("TTFT");
  await expect(reply).not.toHaveClass(/streaming/);
  await expect(reply.locator(".md")).toContainText("Paris");
  expect(errors).toEqual([]);
});

test("Stop ends a long reply and the next message is answered", async ({ page }) => {
  await open(page);
  await setAdvanced(page, "max-tokens", "2000");

  await page.getByTestId("prompt").fill("Write a very long story about a lighthouse keeper, in many chapters.");
  await page.getByTestId("send").click();
  const reply = page.getByTestId("message-assistant").last();
  await expect(reply.locator(".md")).not.toBeEmpty();
  await page.getByTestId("stop").click();
  await expect(reply.getByTestId("metrics")).toContainText("stopped", { timeout: 10_000 });
  await expect(page.getByTestId("send")).toBeVisible();

  // A short cap: with 2000 the 135M model can ramble through all of them (a list repeated to
  // the limit took longer than the wait below in one CI run).
  await setAdvanced(page, "max-tokens", "64");
  await page.getByTestId("prompt").fill("Say hello.");
  await page.getByTestId("send").click();
  await expect(page.getByTestId("message-assistant").last().getByTestId("metrics")).toContainText("tok/s", { timeout: 60_000 });
});

test("the sidebar is off-canvas on phones and closes three ways", async ({ page }, info) => {
  test.skip(info.project.name !== "phone", "phone layout only");
  await open(page);
  const sidebar = page.getByTestId("sidebar");
  await expect(sidebar).not.toBeInViewport();
  const width = (await sidebar.boundingBox())!.width;
  expect(width).toBeLessThanOrEqual(320);
  expect(width).toBeGreaterThanOrEqual(390 * 0.8 - 1);

  await page.getByTestId("hamburger").click();
  await expect(sidebar).toBeInViewport();
  await page.getByTestId("close-sidebar").click();
  await expect(sidebar).not.toBeInViewport();

  await page.getByTestId("hamburger").click();
  await expect(sidebar).toBeInViewport();
  await page.getByTestId("backdrop").click({ position: { x: 370, y: 400 } });
  await expect(sidebar).not.toBeInViewport();

  await page.getByTestId("hamburger").click();
  await page.locator("button.example").first().click();
  await expect(sidebar).not.toBeInViewport();
  await expect(page.getByTestId("message-user")).toContainText("capital of France");
});

test("the desktop layout shows the sidebar without a hamburger", async ({ page }, info) => {
  test.skip(info.project.name !== "desktop", "desktop layout only");
  await open(page);
  await expect(page.getByTestId("hamburger")).toBeHidden();
  await expect(page.getByTestId("sidebar")).toBeInViewport();
});

test("the default model's file answers on candle too, and the reply names the engine", async ({ page }) => {
  const errors = await open(page);
  await openSidebarIfPhone(page);
  await page.getByTestId("model-select").selectOption("smollm2-135m-instruct-candle");
  await expect(page.getByTestId("model-card")).toContainText("candle");
  // Picking a model closes the phone menu by itself.
  if (await page.getByTestId("hamburger").isVisible()) await expect(page.getByTestId("sidebar")).not.toBeInViewport();
  await page.getByTestId("prompt").fill("What is the capital of France?");
  await page.getByTestId("send").click();
  const metrics = page.getByTestId("message-assistant").last().getByTestId("metrics");
  await expect(metrics).toContainText("tok/s", { timeout: 90_000 });
  await expect(metrics).toContainText("smollm2-135m-instruct-candle on candle");
  expect(errors).toEqual([]);
});

test("the content security policy holds: pages hydrate and replies stream under it", async ({ page }) => {
  await page.addInitScript(() => {
    (window as unknown as { violations: string[] }).violations = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      (window as unknown as { violations: string[] }).violations.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  const response = await page.goto("/");
  const policy = response!.headers()["content-security-policy"];
  expect(policy).toContain("'nonce-");
  expect(policy).toContain("frame-ancestors 'none'");
  expect(response!.headers()["x-content-type-options"]).toBe("nosniff");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  // The reply's websocket is allowed by connect-src 'self'.
  await page.getByTestId("prompt").fill("Say hello.");
  await page.getByTestId("send").click();
  await expect(page.getByTestId("message-assistant").last().getByTestId("metrics")).toContainText("tok/s", { timeout: 60_000 });
  for (const path of ["/compare", "/ner", "/ocr", "/bench"]) {
    await page.goto(path);
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  }
  expect(await page.evaluate(() => (window as unknown as { violations: string[] }).violations)).toEqual([]);
});

test("token probabilities colour the reply and show the alternatives", async ({ page }) => {
  const errors = await open(page);
  await openSidebarIfPhone(page);
  await page.locator("details.advanced summary").click();
  await page.getByTestId("temperature").fill("0");
  await page.getByTestId("show-probabilities").check();
  if (await page.getByTestId("close-sidebar").isVisible()) await page.getByTestId("close-sidebar").click();

  await page.getByTestId("prompt").fill("What is the capital of France?");
  await page.getByTestId("send").click();
  const reply = page.getByTestId("message-assistant").last();
  await expect(reply.getByTestId("metrics")).toContainText("tok/s", { timeout: 60_000 });
  const view = reply.getByTestId("token-probs");
  const tokens = view.getByTestId("tok");
  await expect(tokens.first()).toBeVisible();
  // The tokens spell the reply.
  const squash = (s: string) => s.replace(/↵/g, " ").replace(/\s+/g, " ").trim();
  const spelled = await tokens.evaluateAll((els) => els.map((e) => e.firstChild?.textContent ?? "").join(""));
  expect(squash(spelled)).toBe(squash(await reply.locator(".md").innerText()));
  const p = Number(await tokens.first().getAttribute("data-p"));
  expect(p).toBeGreaterThan(0);
  expect(p).toBeLessThanOrEqual(1);
  // Alternatives appear on hover (focus on a phone): five, the chosen one among them.
  const first = tokens.first();
  await expect(first.getByTestId("alt").first()).toBeHidden();
  if (page.viewportSize()!.width < 900) await first.focus(); else await first.hover();
  await expect(first.getByTestId("alt")).toHaveCount(5);
  await expect(first.getByTestId("alt").first()).toBeVisible();
  await expect(first.locator(".alt.chosen")).toHaveCount(1);
  expect(errors).toEqual([]);
});

test("JSON output from the advanced settings holds the reply to the schema", async ({ page }) => {
  const errors = await open(page);
  await openSidebarIfPhone(page);
  await page.locator("details.advanced summary").click();
  await page.getByTestId("output-format").selectOption("json_schema");
  await page.getByTestId("json-schema").fill(JSON.stringify({
    type: "object",
    properties: { city: { type: "string" }, country: { type: "string" } },
    required: ["city", "country"],
    additionalProperties: false,
  }));
  await page.getByTestId("max-tokens").fill("60");
  await page.getByTestId("max-tokens").dispatchEvent("change");
  if (await page.getByTestId("close-sidebar").isVisible()) await page.getByTestId("close-sidebar").click();

  await page.getByTestId("prompt").fill("Which city is the capital of France? Answer in JSON.");
  await page.getByTestId("send").click();
  const reply = page.getByTestId("message-assistant").last();
  await expect(reply.getByTestId("metrics")).toContainText("tok/s", { timeout: 60_000 });
  const parsed = JSON.parse(await reply.locator(".md").innerText());
  expect(Object.keys(parsed)).toEqual(["city", "country"]);
  expect(typeof parsed.city).toBe("string");
  expect(errors).toEqual([]);
});
