// Opens a report page in headless Chromium (Playwright core, Debian's chromium), offline, and writes a
// screenshot of the page and of every <model-viewer> once each has loaded its mesh.
// usage: node render_report.js PAGE.html OUTDIR   (NODE_PATH must find playwright-core)
const { chromium } = require("playwright-core");
const [page_path, out_dir] = process.argv.slice(2);
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--allow-file-access-from-files"],
  });
  const context = await browser.newContext({ offline: true, viewport: { width: 1000, height: 1400 } });
  const page = await context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto("file://" + page_path);
  const count = await page.evaluate(async () => {
    const viewers = [...document.querySelectorAll("model-viewer")];
    await Promise.all(viewers.map((v) => v.loaded ? null : new Promise((ok, bad) => {
      v.addEventListener("load", ok, { once: true });
      v.addEventListener("error", (e) => bad(new Error("model-viewer error " + JSON.stringify(e.detail))), { once: true });
    })));
    for (const v of viewers) v.autoRotate = false;
    return viewers.length;
  });
  await page.waitForTimeout(500); // let the last frames reach the canvas after rotation stops
  const viewers = await page.$$("model-viewer");
  for (let i = 0; i < viewers.length; i++) await viewers[i].screenshot({ path: `${out_dir}/viewer-${i}.png` });
  await page.screenshot({ path: `${out_dir}/page.png`, fullPage: true });
  const external = requests.filter((u) => !u.startsWith("file://") && !u.startsWith("blob:") && !u.startsWith("data:"));
  console.log(JSON.stringify({ viewers: count, external, errors }));
  await browser.close();
})().catch((e) => { console.error(String(e)); process.exit(1); });
