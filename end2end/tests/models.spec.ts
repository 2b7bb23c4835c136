import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
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

// A stand-in for the Hugging Face hub (scripts/test.sh points the models server's HF_ENDPOINT
// at this port): it speaks the part of the protocol hf-hub uses and serves the offline pack's
// real GGUF, whole and cut short.
async function startHub(): Promise<http.Server> {
  const port = Number(process.env.QUANTLAB_E2E_HUB_PORT);
  const whole = fs.readFileSync(process.env.QUANTLAB_E2E_HUB_FILE ?? "");
  const files: Record<string, Buffer> = {
    "e2e/SmolLM2-GGUF/smollm2-e2e.Q4_1.gguf": whole,
    "e2e/SmolLM2-GGUF/broken-e2e.Q4_1.gguf": whole.subarray(0, 4 << 20),
  };
  const server = http.createServer((req, res) => {
    const match = /^\/([^/]+\/[^/]+)\/resolve\/main\/(.+)$/.exec(req.url ?? "");
    const data = match ? files[`${match[1]}/${decodeURIComponent(match[2])}`] : undefined;
    if (!data) {
      res.writeHead(404, { Connection: "close" });
      res.end("Entry not found");
      return;
    }
    const range = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
    const start = range ? Number(range[1]) : 0;
    const end = range && range[2] ? Number(range[2]) : data.length - 1;
    res.writeHead(206, {
      "Content-Range": `bytes ${start}-${end}/${data.length}`,
      "Content-Length": end - start + 1,
      etag: `"${crypto.createHash("sha256").update(data).digest("hex")}"`,
      "x-repo-commit": "0123456789abcdef0123456789abcdef01234567",
      Connection: "close",
    });
    res.end(data.subarray(start, end + 1));
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return server;
}

test("a person adds a GGUF from the hub, verifies and deletes it; a damaged one is refused; NER and OCR models are listed", async ({ page }, info) => {
  expect(process.env.QUANTLAB_E2E_HUB_PORT, "scripts/test.sh sets the stand-in hub's port").toBeTruthy();
  test.setTimeout(240_000);
  const hub = await startHub();
  try {
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto("/models");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    const add = async (file: string) => {
      await page.getByTestId("add-repo").fill("e2e/SmolLM2-GGUF");
      await page.getByTestId("add-file").fill(file);
      await page.getByTestId("add-submit").click();
    };

    // A download cut short is refused with the reason, and not listed.
    await add("broken-e2e.Q4_1.gguf");
    const broken = page.getByTestId("pending-broken-e2e.q4-1");
    await expect(broken.getByTestId("model-job")).toHaveAttribute("data-job-state", "failed", { timeout: 60_000 });
    await expect(broken).toContainText("truncated");
    await expect(page.getByTestId("model-row-broken-e2e.q4-1")).toHaveCount(0);
    await broken.getByTestId("pending-dismiss").click();
    await expect(broken).toHaveCount(0);

    // The whole file is listed from its own metadata and offered in Chat.
    await add("smollm2-e2e.Q4_1.gguf");
    await expect(page.getByTestId("models-notice")).toContainText("Adding `smollm2-e2e.q4-1`");
    const row = page.getByTestId("model-row-smollm2-e2e.q4-1");
    await expect(row).toHaveAttribute("data-state", /^Ready/, { timeout: 120_000 });
    await expect(row).toContainText("Hugging Face e2e/SmolLM2-GGUF");
    await expect(row).toContainText("135M");
    await expect(row).toContainText("Q4_1");

    // Its sha256 is checked against the one recorded when it was added.
    await row.getByTestId("model-verify").click();
    await expect(row.getByTestId("model-job")).toHaveAttribute("data-job-kind", "verify");
    await expect(row.getByTestId("model-job")).toHaveAttribute("data-job-state", "finished", { timeout: 60_000 });
    await expect(row.getByTestId("model-job")).toContainText("matches the published checksum");

    await page.goto("/");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    await openSidebarIfPhone(page);
    await expect(page.locator('#model-select option[value="smollm2-e2e.q4-1"]')).toBeAttached();

    // NER and OCR models are on the page with their state and source.
    await page.goto("/models");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    const ner = page.getByTestId("folder-row-rampart");
    await expect(ner).toContainText("NER");
    await expect(ner).toContainText("PyPI");
    await expect(page.getByTestId("folder-row-ppocr-v6-small")).toContainText("OCR");
    // This server's models folder starts without them: the first run downloads the NER model
    // from the offline pack, and every run checks its files' sha256.
    if ((await ner.getAttribute("data-state")) === "Not downloaded") {
      await ner.getByTestId("model-fetch").click();
      await expect(ner).toHaveAttribute("data-state", "Ready", { timeout: 120_000 });
    }
    await ner.getByTestId("model-verify").click();
    await expect(ner.getByTestId("model-job")).toHaveAttribute("data-job-state", "finished", { timeout: 60_000 });
    await expect(ner.getByTestId("model-job")).toContainText("match their published sha256");

    // Deleting it takes it off the list again.
    await row.getByTestId("model-delete").click();
    await expect(row).toContainText("It will leave the list too.");
    await row.getByTestId("model-delete-confirm").click();
    await expect(page.getByTestId("models-notice")).toContainText("removed it from the list");
    await expect(row).toHaveCount(0);
    if (info.project.name === "phone") {
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    }
    expect(errors).toEqual([]);
  } finally {
    await new Promise((resolve) => hub.close(resolve));
  }
});
