// Drives /dashboard in headless Chromium: enters the token, watches a
// running batch reach 100 %, retries a dead job with its button, and saves a
// screenshot. Env: BASE, TOKEN, BATCH_ID, SCREENSHOT, CHROMIUM.
import { chromium } from "playwright-core";

const { BASE, TOKEN, BATCH_ID, SCREENSHOT } = process.env;
const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const api = async (path) => (await fetch(BASE + path, { headers: { Authorization: "Bearer " + TOKEN } })).json();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(BASE + "/dashboard");
  await page.fill("#token", TOKEN);
  await page.click("#login button");
  await page.locator("#queues tbody tr", { hasText: "poot-validation" }).waitFor({ timeout: 20000 });

  // The batch: its progress bar moves to 100 % and it completes.
  const row = page.locator("#batches tbody tr", { hasText: BATCH_ID });
  await row.waitFor({ timeout: 20000 });
  const seen = new Set();
  const deadline = Date.now() + 180000;
  for (;;) {
    const text = await row.innerText();
    const pct = (text.match(/(\d+)%/) || [])[1];
    if (pct) seen.add(Number(pct));
    if (text.includes("100%") && /completed/.test(text)) break;
    if (Date.now() > deadline) fail(`batch row never reached 100 %: ${text}`);
    await sleep(200);
  }
  const width = await row.locator(".bar > div").evaluate((d) => d.style.width);
  if (width !== "100%") fail(`progress bar width ${width}`);
  console.log(`batch ${BATCH_ID}: progress seen ${[...seen].sort((a, b) => a - b).join(", ")} %`);

  // The dead callback job: retry it from the page.
  const jobId = `callback-${BATCH_ID}`;
  const dead = page.locator("#dead tbody tr", { hasText: jobId });
  await dead.waitFor({ timeout: 60000 });
  // A retried dead job starts over (attempts reset): it has run again when
  // its start time moves.
  const before = (await api(`/api/v1/jobs/${jobId}`)).started_at;
  await dead.locator("button", { hasText: "Retry" }).click();
  const retryDeadline = Date.now() + 60000;
  for (;;) {
    const job = await api(`/api/v1/jobs/${jobId}`);
    if (job.started_at && job.started_at !== before) { console.log(`job ${jobId} retried: ran again at ${job.started_at}, ${job.status}`); break; }
    if (Date.now() > retryDeadline) fail(`retry did not run the job again: ${JSON.stringify(job)}`);
    await sleep(200);
  }
  await page.locator("#schedules tbody tr", { hasText: "scaling_evaluation" }).waitFor({ timeout: 10000 });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  if (errors.length) fail("page errors: " + errors.join("; "));
  console.log("dashboard OK; screenshot " + SCREENSHOT);
} finally {
  await browser.close();
}
