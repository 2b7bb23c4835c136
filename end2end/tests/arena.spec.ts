import { expect, test } from "@playwright/test";

const SMOL = "smollm2-135m-instruct";
const QWEN = "qwen2.5-coder-0.5b-instruct";

// Runs only after scripts/test.sh restarted the server on the same storage.
const afterRestart = process.env.QUANTLAB_E2E_AFTER_RESTART === "1";

test.describe("arena", () => {
  test.skip(afterRestart, "the restart check runs on its own");

  test("a blind battle streams two anonymous replies, the vote reveals them and the leaderboard counts it", async ({ page, request }, info) => {
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    const before = await (await request.get("/api/arena/leaderboard")).json();
    const question = `Name a fruit that is yellow. (${Math.random().toString(36).slice(2, 8)})`;
    // A shared link fills the form.
    await page.goto(`/arena?models=${SMOL},${QWEN}&prompt=${encodeURIComponent(question)}`);
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    await expect(page.getByRole("link", { name: "Arena" })).toHaveAttribute("aria-current", "page");
    await expect(page.getByTestId("arena-prompt")).toHaveValue(question);
    await expect(page.getByTestId("arena-model-1")).toHaveValue(SMOL);
    await expect(page.getByTestId("arena-model-2")).toHaveValue(QWEN);
    await page.getByTestId("arena-max-tokens").fill("16");
    await page.getByTestId("arena-max-tokens").dispatchEvent("change");
    await page.getByTestId("arena-start").click();

    const a = page.getByTestId("arena-side-a");
    const b = page.getByTestId("arena-side-b");
    await expect(page.getByTestId("vote-a")).toBeVisible({ timeout: 90_000 });
    for (const side of [a, b]) {
      await expect(side.getByTestId("arena-reply")).not.toBeEmpty();
      await expect(side).toContainText("hidden until you vote");
      await expect(side.getByTestId("metrics")).toHaveCount(0);
    }
    // Nothing on the page names the models that answered.
    const cards = (await a.innerText()) + (await b.innerText());
    expect(cards).not.toMatch(/SmolLM2 135M|Qwen2\.5 Coder|llama\.cpp|tok\/s/);

    await page.getByTestId("vote-a").click();
    await expect(page.getByTestId("arena-voted")).toContainText("A is better");
    const names = [await a.getByTestId("revealed-name").innerText(), await b.getByTestId("revealed-name").innerText()].join(" | ");
    expect(names).toContain("SmolLM2 135M Instruct");
    expect(names).toContain("Qwen2.5 Coder 0.5B Instruct");
    await expect(a.getByTestId("metrics")).toContainText("tok/s");
    await expect(b.getByTestId("metrics")).toContainText("tok/s");

    // The leaderboard on the page updated with this vote, and the API agrees.
    const board = page.getByTestId("arena-leaderboard");
    await expect(board).toContainText(`${before.votes + 1} vote(s)`);
    await expect(board.getByTestId("arena-row")).toHaveCount(2);
    const after = await (await request.get("/api/arena/leaderboard")).json();
    expect(after.votes).toBe(before.votes + 1);
    await expect(board.getByRole("link", { name: "leaderboard CSV" })).toHaveAttribute("href", "/api/arena/leaderboard?format=csv");

    // It is still there after a reload.
    await page.reload();
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    await expect(page.getByTestId("arena-leaderboard")).toContainText(`${after.votes} vote(s)`);
    if (info.project.name === "phone") {
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    }
    expect(errors).toEqual([]);
  });

  test("a compare link fills the Compare form", async ({ page }) => {
    await page.goto(`/compare?models=${SMOL},${QWEN}&prompt=${encodeURIComponent("Shared question")}`);
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    await expect(page.getByTestId("compare-prompt")).toHaveValue("Shared question");
    await expect(page.getByTestId(`choose-${SMOL}`)).toBeChecked();
    await expect(page.getByTestId(`choose-${QWEN}`)).toBeChecked();
    await expect(page.getByTestId("compare-run")).toBeEnabled();
  });
});

test("after a restart the leaderboard still holds the votes", async ({ page, request }) => {
  test.skip(!afterRestart, "needs scripts/test.sh to restart the server first");
  const battles = await (await request.get("/api/arena/battles")).json();
  // The arena test voted once at each width before the restart.
  expect(battles.length).toBeGreaterThanOrEqual(2);
  await page.goto("/arena");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  const board = page.getByTestId("arena-leaderboard");
  await expect(board).toContainText(`${battles.length} vote(s)`);
  await expect(board).toContainText("SmolLM2 135M Instruct");
  await expect(board).toContainText("Qwen2.5 Coder 0.5B Instruct");
});
