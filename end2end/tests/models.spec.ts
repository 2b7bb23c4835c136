import { expect, test } from "@playwright/test";
import { openSidebarIfPhone } from "./helpers";

// This spec deletes and downloads weights, so it drives a server with a models folder of its
// own (scripts/test.sh starts one and sets this variable).
const MODELS_URL = process.env.QUANTLAB_E2E_MODELS_URL;
const SOURCE = "smollm2-135m-instruct";
const MADE = "smollm2-135m-instruct-q8-0";

test.use({ baseURL: MODELS_URL });

test("a person deletes, downloads, quantizes, compares, benches and deletes a model from the browser alone", async ({ page }, info) => {
  expect(MODELS_URL, "set QUANTLAB_E2E_MODELS_URL to a server with its own models folder, as scripts/test.sh does").toBeTruthy();
  test.setTimeout(360_000);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const openModels = async () => {
    await page.goto("/models");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    await expect(page.getByRole("link", { name: "Models" })).toHaveAttribute("aria-current", "page");
  };
  await openModels();
  const row = page.getByTestId(`model-row-${SOURCE}`);
  await expect(row).toHaveAttribute("data-state", /^Ready/);
  await expect(row).toContainText("Licence: Apache-2.0");
  await expect(row).toContainText("on disk");

  // Delete asks first, then the weights go and the model can be downloaded again.
  await row.getByTestId("model-delete").click();
  await expect(page.getByRole("alertdialog", { name: "Confirm delete" })).toBeVisible();
  await row.getByTestId("model-delete-confirm").click();
  await expect(page.getByTestId("models-notice")).toContainText(`Deleted ${SOURCE}`);
  await expect(row).toHaveAttribute("data-state", "Not downloaded");

  // Download from the offline pack: progress while it runs, then ready.
  await row.getByTestId("model-fetch").click();
  await expect(row.getByTestId("model-job")).toHaveAttribute("data-job-state", "running");
  await expect(row.getByTestId("model-job")).toContainText("Downloading");
  await expect(row).toHaveAttribute("data-state", /^Ready/, { timeout: 180_000 });
  await expect(row.getByTestId("model-job")).toHaveAttribute("data-job-state", "finished");

  // Quantize: an already quantized source needs consent, shown beside the button.
  await row.getByTestId("model-quantize-type").selectOption("Q8_0");
  await expect(row.getByTestId("model-quantize")).toBeDisabled();
  await expect(row).toContainText("already Q4_1: quantizing it again loses quality twice");
  await row.getByTestId("model-requantize").check();
  await row.getByTestId("model-quantize").click();
  await expect(row.getByTestId("model-job")).toHaveAttribute("data-job-state", "running");
  await expect(row.getByTestId("model-job")).toContainText("Quantizing to Q8_0");
  await expect(row.getByTestId("model-job")).toHaveAttribute("data-job-state", "finished", { timeout: 120_000 });
  await expect(row.getByTestId("model-job")).toContainText(`Made ${MADE}`);
  const made = page.getByTestId(`model-row-${MADE}`);
  await expect(made).toHaveAttribute("data-state", /^Ready/);
  await expect(made).toContainText("made here");
  await expect(made).toContainText("Q8_0");

  // The new model is offered in Chat and answers beside its source in Compare.
  await page.goto("/");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await openSidebarIfPhone(page);
  await expect(page.locator(`#model-select option[value="${MADE}"]`)).toBeAttached();
  await page.goto("/compare");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await page.getByTestId(`choose-${SOURCE}`).check();
  await page.getByTestId(`choose-${MADE}`).check();
  await page.getByTestId("compare-prompt").fill("Name a colour.");
  await page.getByTestId("compare-max-tokens").fill("8");
  await page.getByTestId("compare-max-tokens").dispatchEvent("change");
  await page.getByTestId("compare-run").click();
  const cards = page.getByTestId("compare-card");
  await expect(cards).toHaveCount(2);
  for (const i of [0, 1]) {
    await expect(cards.nth(i).getByTestId("metrics")).toContainText("tok/s", { timeout: 90_000 });
  }
  await expect(page.getByTestId("compare-summary")).toContainText("Q8_0");

  // The bench shows what the bits bought: KL divergence against the variant with the most bits.
  await page.goto("/bench");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  for (const [id, value] of [["bench-repeats", "1"], ["bench-tokens", "8"], ["bench-ppl-tokens", "128"]]) {
    await page.getByTestId(id).fill(value);
    await page.getByTestId(id).dispatchEvent("change");
  }
  await expect(page.locator(`input[type=checkbox][value="${SOURCE}"]`)).toBeChecked();
  await page.locator(`input[type=checkbox][value="${MADE}"]`).check();
  await page.getByTestId("bench-run").click();
  await expect(page.getByTestId("bench-progress")).toBeVisible();
  await expect(page.getByTestId("bench-progress")).toBeHidden({ timeout: 180_000 });
  const table = page.getByTestId("bench-table");
  await expect(table.locator("tbody tr").nth(0)).toContainText(SOURCE);
  await expect(table.locator("tbody tr").nth(0).getByTestId("bench-kl")).toHaveText(/^\d/);
  await expect(table.locator("tbody tr").nth(1).getByTestId("bench-kl")).toHaveText("reference");
  await expect(page.getByTestId("chart-kl-bpw").locator("circle")).toHaveCount(2);
  await expect(page.getByTestId("chart-decode-bpw").locator("circle")).toHaveCount(2);
  if (info.project.name === "phone") {
    const width = await page.getByTestId("chart-kl-bpw").locator("svg").evaluate((e) => e.getBoundingClientRect().width);
    expect(width).toBeGreaterThan(300);
    expect(width).toBeLessThanOrEqual(390);
  }

  // Deleting the quantization removes it from the list; the page is back as it started.
  await openModels();
  await made.getByTestId("model-delete").click();
  await expect(made).toContainText("It will leave the list too.");
  await made.getByTestId("model-delete-confirm").click();
  await expect(page.getByTestId("models-notice")).toContainText("removed it from the list");
  await expect(made).toHaveCount(0);
  await expect(row).toHaveAttribute("data-state", /^Ready/);

  if (info.project.name === "phone") {
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  }
  expect(errors).toEqual([]);
});
