import { expect, test } from "@playwright/test";
import * as path from "path";

const SAMPLE = path.join(__dirname, "..", "..", "public", "samples", "ocr-sample.jpg");

test("a picked image is read: boxes over the preview, lines with confidence, hover links them", async ({ page }, info) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto("/ocr");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByRole("link", { name: "OCR" })).toHaveAttribute("aria-current", "page");
  await page.getByTestId("ocr-file").setInputFiles(SAMPLE);

  const lines = page.getByTestId("ocr-line");
  await expect(page.getByTestId("ocr-metrics")).toContainText("lines", { timeout: 60_000 });
  await expect(lines.filter({ hasText: "QUANTLAB CAFE" })).toHaveCount(1);
  await expect(lines.filter({ hasText: "Thank you for your visit!" })).toHaveCount(1);
  const count = await lines.count();
  await expect(page.getByTestId("ocr-box")).toHaveCount(count);
  await expect(page.getByTestId("ocr-metrics")).toContainText("px");

  // Hovering a line lights up its box; the boxes sit over the image.
  await lines.first().hover();
  await expect(page.getByTestId("ocr-box").first()).toHaveClass(/hovered/);
  const figure = await page.getByTestId("ocr-figure").boundingBox();
  const box = await page.getByTestId("ocr-box").first().boundingBox();
  expect(figure && box).toBeTruthy();
  expect(box!.x).toBeGreaterThanOrEqual(figure!.x - 1);
  expect(box!.y + box!.height).toBeLessThanOrEqual(figure!.y + figure!.height + 1);

  if (info.project.name === "phone") {
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  }
  expect(errors).toEqual([]);
});

test("a dropped file is read, and a file that is not an image gets a clear error", async ({ page }) => {
  await page.goto("/ocr");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  // A drop with a text file in it.
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(["just some words"], "notes.txt", { type: "text/plain" }));
    return dt;
  });
  await page.getByTestId("ocr-dropzone").dispatchEvent("drop", { dataTransfer });
  await expect(page.getByTestId("ocr-error")).toContainText("PNG, JPEG");
  await expect(page.getByTestId("ocr-error")).toContainText("415");

  await page.getByTestId("ocr-sample").click();
  await expect(page.getByTestId("ocr-line").filter({ hasText: "QUANTLAB CAFE" })).toHaveCount(1, { timeout: 60_000 });
  await expect(page.getByTestId("ocr-error")).toHaveCount(0);
});
