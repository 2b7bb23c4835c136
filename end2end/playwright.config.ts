import { defineConfig } from "@playwright/test";

// Drives Debian's Chromium; Playwright's own browser download is not available on these machines.
const chromium = {
  browserName: "chromium" as const,
  launchOptions: {
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-sync",
    ],
  },
};

export default defineConfig({
  testDir: "./tests",
  timeout: 120_000,
  expect: { timeout: 30_000 },
  fullyParallel: false,
  workers: 1,
  reporter: [["list"]],
  use: {
    baseURL: process.env.QUANTLAB_E2E_URL ?? "http://127.0.0.1:3000",
    trace: "off",
  },
  projects: [
    { name: "desktop", use: { ...chromium, viewport: { width: 1280, height: 800 } } },
    { name: "phone", use: { ...chromium, viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true } },
  ],
});
