// Drives /dashboard in headless Chromium: enters the token, watches a
// running batch reach 100 %, retries a dead job with its button, and saves a
// screenshot; pauses and resumes a schedule with its buttons. Env: BASE,
// TOKEN, BATCH_ID, SCREENSHOT, CHROMIUM, READY_FILE (created once the page
// shows the batch queued at 0 %: the worker starts then).
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const { BASE, TOKEN, BATCH_ID, SCREENSHOT, READY_FILE } = process.env;
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
  const first = await row.locator("td").allInnerTexts();
  if (first[2] !== "queued" || first[first.length - 1].trim() !== "0%")
    fail(`batch not shown queued at 0 %: ${JSON.stringify(first)}`);
  writeFileSync(READY_FILE, "");
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
  const steps = [...seen].sort((a, b) => a - b);
  console.log(`batch ${BATCH_ID}: progress seen ${steps.join(", ")} %`);
  if (!steps.some((p) => p > 0 && p < 100)) fail(`the bar never showed the batch part-way: ${steps}`);

  // The worker's row: host, the jobs it runs, its heartbeat.
  const workerRow = page.locator("#workers tbody tr").first();
  await workerRow.waitFor({ timeout: 20000 });
  const cells = await workerRow.locator("td").allInnerTexts();
  if (cells.length < 5 || !cells[1] || !/^\d+/.test(cells[2]) || !/\d{4}-\d\d-\d\dT/.test(cells[3]))
    fail(`worker row lacks host, current jobs or heartbeat: ${JSON.stringify(cells)}`);

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
  // Pause, then resume, a schedule with the page's buttons.
  const schedule = page.locator("#schedules tbody tr", { hasText: "scaling_evaluation" });
  await schedule.waitFor({ timeout: 10000 });
  for (const [label, paused] of [["Pause", true], ["Resume", false]]) {
    await schedule.locator("button", { hasText: label }).click();
    const until = Date.now() + 20000;
    for (;;) {
      const s = (await api("/api/v1/schedules")).items.find((i) => i.name === "scaling_evaluation");
      if (s.paused === paused && (await schedule.innerText()).includes(paused ? "paused" : "active")) break;
      if (Date.now() > until) fail(`${label} did not take: ${JSON.stringify(s)}`);
      await sleep(200);
    }
  }
  console.log("schedule scaling_evaluation paused and resumed from the page");
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  if (errors.length) fail("page errors: " + errors.join("; "));
  console.log("dashboard OK; screenshot " + SCREENSHOT);
} finally {
  await browser.close();
}
