import { expect, Page } from "@playwright/test";

export async function open(page: Page) {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto("/");
  // Set by hydrate() once the WASM app has taken over the server-rendered page.
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  return errors;
}

/** Sets a field of the advanced-settings panel (opening the phone sidebar if needed), then closes the sidebar. */
export async function setAdvanced(page: Page, testId: string, value: string) {
  await openSidebarIfPhone(page);
  // Opened only if closed: a second call must not fold the settings away again.
  if ((await page.locator("details.advanced").getAttribute("open")) === null) {
    await page.locator("details.advanced summary").click();
  }
  await page.getByTestId(testId).fill(value);
  await page.getByTestId(testId).dispatchEvent("change");
  if (await page.getByTestId("close-sidebar").isVisible()) await page.getByTestId("close-sidebar").click();
}

export async function openSidebarIfPhone(page: Page) {
  if (await page.getByTestId("hamburger").isVisible()) {
    await page.getByTestId("hamburger").click();
    await expect(page.getByTestId("sidebar")).toBeInViewport();
  }
}

