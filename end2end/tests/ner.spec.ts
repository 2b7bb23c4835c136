import { expect, test } from "@playwright/test";

test("entities are tagged inline by group, listed in a table, and can be filtered", async ({ page }, info) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto("/ner");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByRole("link", { name: "NER" })).toHaveAttribute("aria-current", "page");
  const text = "My name is Zoë Müller and my email is zoe.mueller@example.com. Call 415-555-0132.";
  await page.getByTestId("ner-input").fill(text);
  await page.getByTestId("ner-run").click();

  const result = page.getByTestId("ner-result");
  await expect(result.getByTestId("ner-metrics")).toContainText("entities");
  await expect(result.getByTestId("ner-metrics")).toContainText(`${[...text].length} characters`);
  // The e-mail address is one contact entity, tagged in place with its label.
  const email = result.locator("mark.ent-contact", { hasText: "zoe.mueller@example.com" });
  await expect(email).toBeVisible();
  await expect(email.locator(".ent-label")).toHaveText("EMAIL");
  await expect(result.locator("mark.ent-person").first()).toBeVisible();
  // The marked text reads exactly as the input (labels aside).
  const shown = await result.getByTestId("ner-marked").evaluate((el) => {
    const copy = el.cloneNode(true) as HTMLElement;
    copy.querySelectorAll(".ent-label").forEach((l) => l.remove());
    return copy.textContent;
  });
  expect(shown).toBe(text);
  const rows = result.getByTestId("ner-table").locator("tbody tr");
  await expect(rows.filter({ hasText: "zoe.mueller@example.com" })).toContainText("EMAIL");

  // The legend hides a group's highlighting and brings it back.
  const contact = result.locator("button.legend-item.ent-contact");
  await contact.click();
  await expect(contact).toHaveAttribute("aria-pressed", "false");
  await expect(email).toHaveClass(/dimmed/);
  await contact.click();
  await expect(email).not.toHaveClass(/dimmed/);

  if (info.project.name === "phone") {
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  }
  expect(errors).toEqual([]);
});

test("an empty text cannot be sent, and an example fills the box", async ({ page }) => {
  await page.goto("/ner");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await page.getByTestId("ner-input").fill("   ");
  await expect(page.getByTestId("ner-run")).toBeDisabled();
  await page.getByRole("button", { name: "Plain prose" }).click();
  await expect(page.getByTestId("ner-input")).toHaveValue(/committee/);
  await page.getByTestId("ner-run").click();
  await expect(page.getByTestId("ner-result")).toContainText("No entities found");
});
