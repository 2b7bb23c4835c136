import { expect, Page, test } from "@playwright/test";
import { open, openSidebarIfPhone, setAdvanced } from "./helpers";

function tag() {
  return Math.random().toString(36).slice(2, 10);
}

const ROOT = "00000000-0000-0000-0000-000000000000";

async function waitSaved(page: Page, count: number) {
  // The newest reply on screen is saved, and the page is ready for the next action.
  await expect(page.getByTestId("message-assistant").last().getByTestId("saved")).toBeVisible({ timeout: 60_000 });
  await expect(page.getByTestId("send")).toBeVisible();
  await expect(page.getByTestId("message-assistant")).toHaveCount(count);
}

test("edit and regenerate make branches that survive a reload", async ({ page, request }) => {
  const word = tag();
  const errors = await open(page);
  await setAdvanced(page, "max-tokens", "12");

  await page.getByTestId("prompt").fill(`Name a fruit, ${word}.`);
  await page.getByTestId("send").click();
  await waitSaved(page, 1);

  // Regenerate: a second answer to the same question, shown as 2/2.
  const answer = page.getByTestId("message-assistant");
  await answer.getByTestId("regenerate").click();
  await waitSaved(page, 1);
  await expect(answer.getByTestId("branch-place")).toHaveText("2/2");
  await answer.getByTestId("branch-previous").click();
  await expect(answer.getByTestId("branch-place")).toHaveText("1/2");

  // Edit the question: a sibling question with its own answer.
  const question = page.getByTestId("message-user");
  await question.getByTestId("edit").click();
  await question.getByTestId("edit-text").fill(`Name a colour, ${word}.`);
  await question.getByTestId("edit-send").click();
  await waitSaved(page, 1);
  await expect(question).toContainText("Name a colour");
  await expect(question.getByTestId("branch-place")).toHaveText("2/2");
  await expect(answer.getByTestId("branches")).toHaveCount(0);

  // Back to the first question: it opens on its newest answer.
  await question.getByTestId("branch-previous").click();
  await expect(question).toContainText("Name a fruit");
  await expect(answer.getByTestId("branch-place")).toHaveText("2/2");

  // Continue that branch: the new turn hangs under the shown answer.
  await page.getByTestId("prompt").fill("And another?");
  await page.getByTestId("send").click();
  await waitSaved(page, 2);

  // After a reload the conversation opens on the newest branch, and every branch is there.
  await page.reload();
  await open(page);
  await openSidebarIfPhone(page);
  const item = page.getByTestId("history-item").filter({ hasText: word });
  await expect(item).toContainText("7 messages");
  await item.locator(".history-title").click();
  await expect(page.getByTestId("message-user")).toHaveCount(2);
  await expect(page.getByTestId("message-user").first()).toContainText("Name a fruit");
  await expect(page.getByTestId("message-user").first().getByTestId("branch-place")).toHaveText("1/2");
  await expect(page.getByTestId("message-assistant").first().getByTestId("branch-place")).toHaveText("2/2");
  await page.getByTestId("message-user").first().getByTestId("branch-next").click();
  await expect(page.getByTestId("message-user")).toHaveCount(1);
  await expect(page.getByTestId("message-user")).toContainText("Name a colour");

  // The JSON export keeps the tree, and imports back as the same tree.
  await openSidebarIfPhone(page);
  const href = (await item.getByTestId("export-md").getAttribute("href"))!;
  const exported = await (await request.get(href.replace("format=md", "format=json"))).json();
  expect(exported.messages).toHaveLength(7);
  const roots = exported.messages.filter((m: { parent_id?: string }) => m.parent_id === ROOT);
  expect(roots).toHaveLength(2);
  const markdown = await (await request.get(href)).text();
  expect(markdown).toContain("other branches");
  const imported = await request.post("/api/conversations", { data: { ...exported, title: `Copy ${word}` } });
  expect(imported.status()).toBe(201);
  const copy = await imported.json();
  expect(copy.messages.map((m: { parent_id?: string }) => m.parent_id)).toEqual(exported.messages.map((m: { parent_id?: string }) => m.parent_id));
  expect(errors).toEqual([]);
});

test("code blocks are highlighted and the copy buttons copy", async ({ page, context, request }) => {
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  const word = tag();
  const code = `fn main() {\n    println!("${word}"); // greet\n}`;
  const created = await request.post("/api/conversations", {
    data: {
      title: `Code ${word}`,
      messages: [
        { role: "user", content: "Show me Rust." },
        { role: "assistant", content: `Here:\n\n\`\`\`rust\n${code}\n\`\`\`\n\n<script>alert(1)</script>` },
      ],
    },
  });
  expect(created.status()).toBe(201);
  const errors = await open(page);
  await openSidebarIfPhone(page);
  await page.getByTestId("history-item").filter({ hasText: word }).locator(".history-title").click();
  const reply = page.getByTestId("message-assistant");
  await expect(reply.locator(".code-lang")).toHaveText("rust");
  await expect(reply.locator(".hl-keyword").first()).toHaveText("fn");
  await expect(reply.locator(".hl-comment")).toHaveText("// greet");
  // Raw HTML from a message is text, never markup.
  await expect(reply).toContainText("<script>alert(1)</script>");

  await reply.getByTestId("copy-code").click();
  await expect(reply.getByTestId("copy-code")).toHaveText("Copied");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(code);
  await page.getByTestId("message-user").getByTestId("copy-message").click();
  await expect(page.getByTestId("message-user").getByTestId("copy-message")).toHaveText("Copied");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe("Show me Rust.");
  expect(errors).toEqual([]);
});
