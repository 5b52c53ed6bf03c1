// Drives `python -m host web` in headless Chromium (Playwright core, Debian's chromium), with every request that
// would leave 127.0.0.1 unresolvable and listed: drops two images, waits for both meshes and for their 3D views to draw,
// refuses a bad setting in the page's words, starts a long third object and cancels it, then screenshots the page.
// usage: node drive_web.js URL IMAGE_A IMAGE_B OUTDIR   (NODE_PATH must find playwright-core)
// Prints one JSON line: what the page showed, for the Python test to judge.
const { chromium } = require("playwright-core");
const [url, image_a, image_b, out_dir] = process.argv.slice(2);
const DEADLINE_MS = 120000;

async function setNumber(page, id, value) {
  await page.fill(`#${id} input`, String(value));
  await page.press(`#${id} input`, "Tab");
}

async function drop(page, files) {
  await page.setInputFiles("#uploads input[type=file]", files);
  const names = files.map((f) => f.split("/").pop());
  await page.waitForFunction(
    (names) => names.every((n) => document.querySelector("#uploads").innerText.replace(/\s/g, "").includes(n)),
    names,
    { timeout: DEADLINE_MS },
  );
}

async function state(page, name, wanted) {
  await page.waitForSelector(`.object-status[data-name="${name}"][data-state="${wanted}"]`, { timeout: DEADLINE_MS });
}

// Pixel statistics of an element's screenshot, decoded by the browser itself: mean spread and the share of pixels
// that are not near-white (the viewer's background is white).
async function drawn(page, element) {
  const png = (await element.screenshot()).toString("base64");
  return page.evaluate(async (png) => {
    const image = new Image();
    image.src = "data:image/png;base64," + png;
    await image.decode();
    const canvas = document.createElement("canvas");
    canvas.width = image.width;
    canvas.height = image.height;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const data = context.getImageData(0, 0, image.width, image.height).data;
    let sum = 0, squares = 0, coloured = 0;
    const n = data.length / 4;
    for (let i = 0; i < data.length; i += 4) {
      const grey = (data[i] + data[i + 1] + data[i + 2]) / 3;
      sum += grey;
      squares += grey * grey;
      if (Math.min(data[i], data[i + 1], data[i + 2]) < 230) coloured++;
    }
    const mean = sum / n;
    return { std: Math.sqrt(squares / n - mean * mean), coloured: coloured / n };
  }, png);
}

// Waits until the viewer's canvas shows a mesh (a condition on its pixels, checked frame after frame).
async function untilDrawn(page, selector) {
  const viewer = await page.waitForSelector(selector, { timeout: DEADLINE_MS });
  const started = Date.now();
  let seen = await drawn(page, viewer);
  while (!(seen.std > 10 && seen.coloured > 0.02) && Date.now() - started < DEADLINE_MS) {
    await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
    seen = await drawn(page, viewer);
  }
  return { viewer, seen };
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // No name resolves but the server's address: nothing can leave the machine (routing requests through Playwright
    // instead would stall the page's event stream).
    args: [
      "--no-sandbox",
      "--use-angle=swiftshader",
      "--enable-unsafe-swiftshader",
      "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const external = [];
  const page = await context.newPage();
  page.on("request", (r) => {
    const target = r.url();
    if (!target.startsWith(url) && !target.startsWith("blob:") && !target.startsWith("data:")) external.push(target);
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  const banner = await page.innerText("#model-label");

  await setNumber(page, "steps", 5);
  await drop(page, [image_a, image_b]);
  await page.click("#make");
  const names = [image_a, image_b].map((f) => f.split("/").pop().replace(/\.[^.]+$/, ""));
  for (const name of names) await state(page, name, "done");
  const viewers = [];
  for (let slot = 0; slot < 2; slot++) {
    const { viewer, seen } = await untilDrawn(page, `#card-${slot} .object-mesh canvas`);
    await viewer.screenshot({ path: `${out_dir}/viewer-${slot}.png` });
    viewers.push(seen);
  }
  const downloads = await page.$$eval("#card-0 a", (links) => links.map((a) => a.innerText.trim()).filter((t) => t));

  // A setting the wire refuses: nothing starts, the page says which field and why, the dropped file stays.
  await setNumber(page, "steps", 5000);
  await drop(page, [image_a]);
  await page.click("#make");
  await page.waitForFunction(() => document.querySelector("#message").innerText.includes("nothing started"), null, {
    timeout: DEADLINE_MS,
  });
  const refused = await page.innerText("#message");
  const kept = (await page.innerText("#uploads")).replace(/\s/g, "");

  // A long object, cancelled while the worker runs its diffusion.
  await setNumber(page, "steps", 1000);
  await page.click("#make");
  const long = names[0] + "-2";
  await page.waitForSelector(`.object-status[data-name="${long}"][data-state="views"] progress`, {
    timeout: DEADLINE_MS,
  });
  await page.click("#card-2 button.object-cancel");
  await state(page, long, "cancelled");
  const cancelled = await page.innerText("#message");
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${out_dir}/page.png`, fullPage: true });
  const states = await page.$$eval(".object-status", (all) => all.map((s) => [s.dataset.name, s.dataset.state]));
  console.log(JSON.stringify({ banner, states, viewers, downloads, refused, kept, cancelled, external, errors }));
  await browser.close();
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
