// Learning-rate schedules: MultiStepLR and OneCycleLR against values PyTorch 1.13 computed,
// CosineLR against its closed form, stepping an optimizer, state dicts, and validation.
import assert from "node:assert/strict";
import { SGD } from "../../src/optim/sgd.ts";
import { CosineLR, MultiStepLR, OneCycleLR, type Schedule } from "../../src/optim/schedules.ts";
import { Tensor } from "../../src/tensor.ts";
import { gpuTest } from "../_gpu.ts";

/** The learning rates of iterations 0..n as the optimizer sees them when stepping. */
function run(target: { lr: number }, schedule: Schedule, n: number): number[] {
  const out = [target.lr];
  for (let i = 0; i < n; i++) out.push(schedule.step());
  assert.equal(target.lr, out[n]);
  return out;
}

gpuTest("MultiStepLR divides by 10 at each milestone like PyTorch's MultiStepLR", () => {
  // torch.optim.lr_scheduler.MultiStepLR(SGD(..., lr=0.1), milestones=[3, 5], gamma=0.1),
  // opt.step(); s.step() six times: the lr before each step.
  const torch = [0.1, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002, 0.0010000000000000002];
  const target = { lr: 0.1 };
  const schedule = new MultiStepLR(target, { milestones: [5, 3] });
  assert.deepEqual(schedule.milestones, [3, 5]);
  const lrs = run(target, schedule, 6);
  lrs.slice(0, 6).forEach((lr, i) =>
    assert.ok(Math.abs(lr - torch[i]) <= 1e-15 * torch[i], `${i}`)
  );
  // The paper's schedule: lr 0.1, ÷10 at 32k and 48k iterations.
  const paper = new MultiStepLR({ lr: 0.1 }, { milestones: [32000, 48000] });
  assert.equal(paper.lrAt(31999), 0.1);
  assert.ok(Math.abs(paper.lrAt(32000) - 0.01) < 1e-15);
  assert.ok(Math.abs(paper.lrAt(63999) - 0.001) < 1e-15);
  // A repeated milestone counts twice, as PyTorch's Counter does.
  assert.ok(Math.abs(new MultiStepLR({ lr: 1 }, { milestones: [2, 2] }).lrAt(2) - 0.01) < 1e-15);
});

gpuTest("OneCycleLR reproduces PyTorch's OneCycleLR (cos, no momentum) exactly", () => {
  // Computed with PyTorch 1.13:
  //   import torch
  //   def lrs(total, **kw):
  //       opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
  //       s = torch.optim.lr_scheduler.OneCycleLR(opt, total_steps=total,
  //                                               cycle_momentum=False, **kw)
  //       out = [opt.param_groups[0]["lr"]]
  //       for _ in range(total):
  //           opt.step(); s.step(); out.append(opt.param_groups[0]["lr"])
  //       return out
  //   print(lrs(10, max_lr=0.1))
  //   print(lrs(7, max_lr=2.0, pct_start=0.25, div_factor=10.0, final_div_factor=100.0))
  const torchA = [
    0.0040000000000000036,
    0.052000000000000005,
    0.1,
    0.09504846320134738,
    0.0811745653949763,
    0.06112620219362893,
    0.03887419780637107,
    0.0188258346050237,
    0.004951936798652629,
    4e-07,
    0.004951936798652624,
  ];
  const torchB = [
    0.19999999999999996,
    1.9888419953989034,
    1.7333188199579963,
    1.223298413022358,
    0.6360243166579713,
    0.17558746445832132,
    0.002,
    0.1755874644583211,
  ];
  const a = { lr: 123 };
  assert.deepEqual(run(a, new OneCycleLR(a, { maxLr: 0.1, totalSteps: 10 }), 10), torchA);
  const b = { lr: 0 };
  const options = { maxLr: 2, totalSteps: 7, pctStart: 0.25, divFactor: 10, finalDivFactor: 100 };
  const schedule = new OneCycleLR(b, options);
  assert.deepEqual(run(b, schedule, 7), torchB);
  // PyTorch refuses to step past total_steps; so does this, leaving the state unchanged.
  assert.throws(() => schedule.step(), /tried to step 9 times/);
  assert.equal(schedule.iteration, 7);
  assert.equal(b.lr, torchB[7]);
});

gpuTest("CosineLR warms up linearly, then anneals along a cosine to minLr and stays", () => {
  const target = { lr: 0.4 };
  const schedule = new CosineLR(target, { totalSteps: 12, warmupSteps: 4, minLr: 0.02 });
  const lrs = run(target, schedule, 15);
  const expected = lrs.map((_, t) =>
    t < 4 ? 0.4 * (t + 1) / 4 : 0.02 + 0.38 * (1 + Math.cos(Math.PI * Math.min(1, (t - 4) / 8))) / 2
  );
  lrs.forEach((lr, t) => assert.ok(Math.abs(lr - expected[t]) < 1e-15, `iteration ${t}: ${lr}`));
  assert.equal(lrs[0], 0.1);
  assert.equal(lrs[3], 0.4);
  assert.equal(lrs[4], 0.4);
  assert.ok(Math.abs(lrs[8] - 0.21) < 1e-15);
  assert.equal(lrs[12], 0.02);
  assert.equal(lrs[15], 0.02);
  for (let t = 4; t < 12; t++) assert.ok(lrs[t + 1] < lrs[t], `not decreasing at ${t}`);
  // Without warm-up the first rate is the base rate.
  assert.equal(new CosineLR({ lr: 0.1 }, { totalSteps: 5 }).lrAt(0), 0.1);
});

gpuTest("a schedule sets an optimizer's lr, and its state dict resumes it", () => {
  const p = Tensor.ones([3], { requiresGrad: true });
  const opt = new SGD([p], { lr: 0.1, momentum: 0.9 });
  const schedule = new CosineLR(opt, { totalSteps: 100, warmupSteps: 10 });
  assert.equal(opt.lr, 0.01);
  for (let i = 0; i < 37; i++) schedule.step();
  assert.equal(opt.lr, schedule.lrAt(37));
  const saved = JSON.parse(JSON.stringify(schedule.stateDict()));
  assert.deepEqual(saved, { iteration: 37, baseLr: 0.1 });
  // Resuming: the optimizer's restored lr is the scheduled one; the saved base rate wins.
  const opt2 = new SGD([p], { lr: opt.lr, momentum: 0.9 });
  const resumed = new CosineLR(opt2, { totalSteps: 100, warmupSteps: 10 });
  resumed.loadStateDict(saved);
  assert.equal(resumed.baseLr, 0.1);
  assert.equal(opt2.lr, opt.lr);
  assert.equal(resumed.step(), schedule.step());

  const multi = new MultiStepLR(opt2, { milestones: [2] });
  multi.loadStateDict({ iteration: 5, baseLr: 0.2 });
  assert.ok(Math.abs(opt2.lr - 0.02) < 1e-15);
  const cycle = new OneCycleLR(opt2, { maxLr: 1, totalSteps: 20 });
  cycle.loadStateDict({ iteration: 6 });
  assert.equal(opt2.lr, cycle.lrAt(6));
  assert.throws(() => cycle.loadStateDict({ iteration: 21 }), RangeError);
  assert.throws(() => cycle.loadStateDict({ iteration: -1 }), RangeError);
  assert.equal(cycle.iteration, 6);
  assert.throws(() => multi.loadStateDict({ iteration: 1, baseLr: -1 }), RangeError);
  assert.equal(multi.baseLr, 0.2);
  p.dispose();
});

gpuTest("schedules validate their options", () => {
  const t = { lr: 0.1 };
  assert.throws(() => new MultiStepLR(t, { milestones: [1.5] }), RangeError);
  assert.throws(() => new MultiStepLR(t, { milestones: [-1] }), RangeError);
  assert.throws(() => new MultiStepLR(t, { milestones: [3], gamma: 0 }), RangeError);
  assert.throws(() => new MultiStepLR(t, {} as { milestones: number[] }), TypeError);
  assert.throws(() => new MultiStepLR({} as { lr: number }, { milestones: [] }), TypeError);
  assert.throws(() => new CosineLR(t, { totalSteps: 0 }), RangeError);
  assert.throws(() => new CosineLR(t, { totalSteps: 10, warmupSteps: 10 }), RangeError);
  assert.throws(() => new CosineLR(t, { totalSteps: 10, minLr: -1 }), RangeError);
  assert.throws(() => new OneCycleLR(t, { maxLr: 0, totalSteps: 10 }), RangeError);
  assert.throws(() => new OneCycleLR(t, { maxLr: 1, totalSteps: 2.5 }), RangeError);
  assert.throws(() => new OneCycleLR(t, { maxLr: 1, totalSteps: 10, pctStart: 1 }), RangeError);
  assert.throws(() => new OneCycleLR(t, { maxLr: 1, totalSteps: 10, pctStart: 0.1 }), RangeError);
  assert.throws(() => new OneCycleLR(t, { maxLr: 1, totalSteps: 9, divFactor: -2 }), RangeError);
  assert.throws(() => new CosineLR(t, { totalSteps: 10 }).lrAt(-1), RangeError);
  assert.equal(t.lr, 0.1, "a refused schedule changed the lr");
});
