import { expect, test } from "@playwright/test";
import { open, openSidebarIfPhone } from "./helpers";

function tag() {
  return Math.random().toString(36).slice(2, 10);
}

test("a chat is saved as it happens and comes back after a reload", async ({ page }) => {
  const word = tag();
  await open(page);
  await page.getByTestId("prompt").fill(`Say hello to ${word}.`);
  await page.getByTestId("send").click();
  const reply = page.getByTestId("message-assistant").last();
  await expect(reply.getByTestId("saved")).toBeVisible({ timeout: 60_000 });

  await page.reload();
  await open(page);
  await openSidebarIfPhone(page);
  await expect(page.getByTestId("persistence")).toContainText("Saved");
  const item = page.getByTestId("history-item").filter({ hasText: word });
  await expect(item).toContainText("2 messages");
  await expect(item).toContainText("smollm2-135m-instruct");
  await item.locator(".history-title").click();
  await expect(page.getByTestId("message-user")).toContainText(word);
  await expect(page.getByTestId("message-assistant").getByTestId("metrics")).toContainText("tok/s");

  // Continuing the loaded conversation appends to it.
  await page.getByTestId("prompt").fill("Thanks!");
  await page.getByTestId("send").click();
  await expect(page.getByTestId("message-assistant").last().getByTestId("saved")).toBeVisible({ timeout: 60_000 });
  await openSidebarIfPhone(page);
  await expect(page.getByTestId("history-item").filter({ hasText: word })).toContainText("4 messages");
});

test("search, rename, export and delete from the history", async ({ page, request }) => {
  const word = tag();
  const created = await request.post("/api/conversations", {
    data: { title: `Trip ${word}`, messages: [{ role: "user", content: `Where is ${word}?` }, { role: "assistant", content: "Far away." }] },
  });
  expect(created.status()).toBe(201);
  const { id } = await created.json();

  await open(page);
  await openSidebarIfPhone(page);
  await page.getByTestId("history-search").fill(word);
  const items = page.getByTestId("history-item");
  await expect(items).toHaveCount(1);
  await expect(items.first()).toContainText(`Trip ${word}`);

  page.once("dialog", (dialog) => dialog.accept(`Renamed ${word}`));
  await items.first().getByTestId("rename").click();
  await expect(items.first()).toContainText(`Renamed ${word}`);

  const href = await items.first().getByTestId("export-md").getAttribute("href");
  const markdown = await (await request.get(href!)).text();
  expect(markdown).toContain(`# Renamed ${word}`);
  expect(markdown).toContain(`Where is ${word}?`);
  const json = await (await request.get(`/api/conversations/${id}/export?format=json`)).json();
  expect(json.messages).toHaveLength(2);

  page.once("dialog", (dialog) => dialog.accept());
  await items.first().getByTestId("delete").click();
  await expect(page.getByTestId("history-empty")).toBeVisible();
  expect((await request.get(`/api/conversations/${id}`)).status()).toBe(404);
});

test("an exported conversation imports back from a file", async ({ page, request }) => {
  const word = tag();
  const created = await request.post("/api/conversations", {
    data: { title: `Export ${word}`, messages: [{ role: "user", content: `Keep ${word}` }] },
  });
  const { id } = await created.json();
  const exported = await (await request.get(`/api/conversations/${id}/export?format=json`)).text();
  await request.delete(`/api/conversations/${id}`);

  await open(page);
  await openSidebarIfPhone(page);
  await page.getByTestId("import-file").setInputFiles({ name: "export.json", mimeType: "application/json", buffer: Buffer.from(exported) });
  await expect(page.getByTestId("message-user")).toContainText(`Keep ${word}`);
  await openSidebarIfPhone(page);
  await page.getByTestId("history-search").fill(word);
  await expect(page.getByTestId("history-item")).toHaveCount(1);
});

test("the sidebar says where conversations are saved", async ({ page }) => {
  const backend = process.env.QUANTLAB_E2E_BACKEND ?? "json";
  await open(page);
  await openSidebarIfPhone(page);
  const badge = page.getByTestId("persistence");
  await expect(badge).toHaveAttribute("data-backend", backend);
  await expect(badge).toContainText(backend === "postgres" ? "Saved to PostgreSQL" : "Saved as JSON files");
});
