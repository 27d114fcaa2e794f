// ThroughputMeter: the arithmetic of its rates and ETA, the untimed warm-up steps, restart().
import assert from "node:assert/strict";
import { ThroughputMeter } from "../../src/train/throughput.ts";

Deno.test("ThroughputMeter does not time the warm-up steps and knows nothing until then", () => {
  const meter = new ThroughputMeter({ totalSteps: 100, warmupSteps: 2 });
  meter.update(1, 32, 0); // no window open before the first update
  meter.update(1, 32, 60_000); // a window after 1 step: still warm-up (compiling)
  assert.equal(meter.measured, false);
  assert.ok(Number.isNaN(meter.imagesPerSecond));
  assert.ok(Number.isNaN(meter.etaSeconds));
  meter.update(1, 32, 60_500); // the first timed window: 1 step of 32 images in 0.5 s
  assert.equal(meter.measured, true);
  assert.equal(meter.imagesPerSecond, 64);
  assert.equal(meter.secondsPerStep, 0.5);
  assert.equal(meter.steps, 3);
  assert.equal(meter.etaSeconds, 97 * 0.5);
});

Deno.test("ThroughputMeter smooths each window into an exponential moving average", () => {
  const meter = new ThroughputMeter({ totalSteps: 20, warmupSteps: 0, smoothing: 0.25 });
  meter.restart(1000);
  meter.update(4, 400, 3000); // 200 img/s, 0.5 s/step: taken as is
  assert.equal(meter.imagesPerSecond, 200);
  meter.update(2, 200, 5000); // 100 img/s, 1 s/step: a quarter of the way
  assert.equal(meter.imagesPerSecond, 0.25 * 100 + 0.75 * 200);
  assert.equal(meter.secondsPerStep, 0.25 * 1 + 0.75 * 0.5);
  assert.equal(meter.etaSeconds, (20 - 6) * 0.625);
  assert.equal(meter.secondsFor(4), 2.5);
  assert.equal(meter.secondsFor(-1), 0);
});

Deno.test("ThroughputMeter counts a resumed run's earlier steps in the ETA, not in the rate", () => {
  const meter = new ThroughputMeter({ totalSteps: 1000, completedSteps: 900, warmupSteps: 1 });
  meter.update(1, 128, 0);
  meter.update(10, 1280, 5000);
  assert.equal(meter.steps, 911);
  assert.equal(meter.imagesPerSecond, 256);
  assert.equal(meter.etaSeconds, 89 * 0.5);
});

Deno.test("ThroughputMeter.restart() leaves the time since the last update out", () => {
  const meter = new ThroughputMeter({ warmupSteps: 0, smoothing: 1 });
  meter.restart(0);
  meter.update(1, 10, 1000); // 10 img/s
  meter.restart(61_000); // a minute of evaluation, not counted
  meter.update(1, 10, 61_500); // 20 img/s
  assert.equal(meter.imagesPerSecond, 20);
  assert.equal(meter.etaSeconds, Infinity); // no totalSteps
  assert.throws(() => new ThroughputMeter({ smoothing: 0 }), RangeError);
});
