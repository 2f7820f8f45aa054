"""LeRaC's cost per training step beside conventional training, for BERT and SepTr.

LeRaC's claim is that it costs nothing extra in any domain: it only changes
each layer group's learning rate. This script checks it on the text and audio
models: the default small BERT (4 layers, hidden 128) on token batches of the
default length, with AdamW as in the paper, and SepTr on log-mel-shaped
spectrograms with Adamax. Both regimes train the same model on the same
tensors (random, held in memory: speed does not depend on the data's content)
with the same seed; LeRaC's curriculum spans the whole run, so every measured
step pays for the per-layer rate rise (7 and 5 groups).

A round times one epoch of training steps of each regime, in a fresh random
order; a regime's ratio is the median over rounds of its time over
conventional's in the same round. A second, identical conventional run
("conventional again") is timed alongside: its ratio, which would be 1 on a
quiet machine, shows how far noise alone moves a ratio here. A step is the Trainer's per-batch work: the
batch slice, the audio masking, and the regime's `train_step` (rates, forward,
backward, optimizer step); evaluation is left out. On the CPU the clock is the
process's CPU time with one torch thread (the work done, not the time other
jobs held the cores; the wall ratio is printed beside it); on a GPU, wall
time after a synchronisation.

Run from the repository root: python benchmarks/text_audio_overhead.py [--help]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import common
import torch

from trainables.config import RunConfig
from trainables.data import Dataset, Split
from trainables.masking import SpectrogramMasking
from trainables.schedules import RateScheduler
from trainables.training import Trainer, resolve_device

NAME = "text_audio_overhead"
REGIMES = ("conventional", "lerac")
CONTROL = "conventional again"  # an A/A control: the same conventional run, timed once more
LERAC_BOUND = 1.02
HEADERS = ["regime", "groups", "median ms/step", "vs conventional", "IQR of ratio", "ratio of means",
           "wall ratio"]


@dataclass(frozen=True)
class Case:
    """One model on in-memory data of one modality, with the optimizer the paper used for it."""

    label: str
    model: str
    optimizer: str
    lr: float
    data: Dataset


def random_text(*, train: int, length: int, vocab: int, seed: int = 0) -> Dataset:
    """Token batches shaped like a tokenised pair dataset: ids, a full mask, two segments."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        ids = torch.randint(5, vocab, (n, length), generator=generator)
        segments = (torch.arange(length) >= length // 2).long().expand(n, -1)
        x = torch.stack([ids, torch.ones_like(ids), segments], dim=1)
        return Split(x, torch.randint(0, 2, (n,), generator=generator))

    return Dataset(
        name="random-text", train=split(train), val=split(8), test=split(8), num_classes=2,
        input_shape=(3, length), crop_padding=0, flip=False,
        noisy=torch.zeros(train, dtype=torch.bool), trusted=torch.ones(train, dtype=torch.bool),
        modality="text", vocab_size=vocab,
    )


def random_spectrograms(*, train: int, mels: int, frames: int, classes: int, seed: int = 0) -> Dataset:
    """Normalised (N, 1, mels, frames) tensors with the audio datasets' masking policy."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(torch.randn(n, 1, mels, frames, generator=generator),
                     torch.randint(0, classes, (n,), generator=generator))

    return Dataset(
        name="random-audio", train=split(train), val=split(8), test=split(8), num_classes=classes,
        input_shape=(1, mels, frames), crop_padding=0, flip=False,
        noisy=torch.zeros(train, dtype=torch.bool), trusted=torch.ones(train, dtype=torch.bool),
        modality="audio",
        masking=SpectrogramMasking(freq_masks=2, freq_width=mels // 8, time_masks=2, time_width=frames // 10),
    )


def regime_config(regime: str, case: Case, epochs: int, args: argparse.Namespace) -> RunConfig:
    values: dict[str, Any] = {
        # The dataset only names the modality (the Trainer trains on case.data).
        "dataset": "rte" if case.data.modality == "text" else "esc50",
        "regime": regime, "model": case.model, "optimizer": case.optimizer, "lr": case.lr,
        "weight_decay": 0.01, "batch_size": args.batch_size, "epochs": epochs,
        "device": args.device, "cpu_threads": args.threads, "seed": 0,
    }
    if regime == "lerac":
        values.update(curriculum_epochs=float(epochs), eta_min=case.lr * 1e-4)
    return RunConfig.from_dict(values)


def train_steps(trainer: Trainer) -> None:
    """One epoch of the Trainer's per-batch training work, without evaluation."""
    data = trainer.data
    trainer.model.train()
    order = torch.randperm(len(data.train), generator=trainer.batches)
    batches = order[: trainer.steps_per_epoch * trainer.config.train.batch_size].to(trainer.device)
    loss = torch.zeros((), device=trainer.device)
    for index in batches.view(trainer.steps_per_epoch, -1):
        x = data.train.x[index]
        if data.masking is not None:
            x = data.masking(x, generator=trainer.batches)
        if trainer.on_gpu and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        loss += trainer.regime.train_step(x, data.train.y[index], index)
    loss.item()  # waits for the device


def bookkeeping_share(trainers: dict[str, Trainer], steps: int, step_s: float) -> float:
    """LeRaC's rate bookkeeping alone (apply + advance per step) minus conventional's, per step,
    as a share of a conventional step."""
    def seconds(trainer: Trainer) -> float:
        scheduler = RateScheduler(trainer.regime.optimizer, trainer.regime.scheduler.schedule)
        started = time.process_time()
        for _ in range(steps):
            scheduler.apply()
            scheduler.advance()
        return (time.process_time() - started) / steps

    return (seconds(trainers["lerac"]) - seconds(trainers["conventional"])) / step_s


def measure(case: Case, args: argparse.Namespace, clock: str) -> dict[str, Any]:
    epochs = args.warmup + args.rounds
    trainers = {r: Trainer(regime_config(r, case, epochs, args), data=case.data) for r in REGIMES}
    trainers[CONTROL] = Trainer(regime_config("conventional", case, epochs, args), data=case.data)
    steps = trainers["conventional"].steps_per_epoch
    groups = len(trainers["lerac"].regime.optimizer.param_groups)
    print(f"\n{case.label}: {args.warmup} warm-up + {args.rounds} rounds of {steps} steps "
          f"(batch {args.batch_size}), {groups} layer groups", flush=True)
    timings = common.round_robin(
        {r: (lambda t=t: train_steps(t)) for r, t in trainers.items()},
        rounds=args.rounds, warmup=args.warmup,
    )
    times = timings.cpu if clock == "cpu" else timings.wall
    ratios = common.paired_ratios(times, "conventional")
    wall_ratios = common.paired_ratios(timings.wall, "conventional")
    rows = {}
    for regime in (*REGIMES, CONTROL):
        q1, median_ratio, q3 = common.quartiles(ratios[regime])
        rows[regime] = {
            "median_step_s": common.quartiles(times[regime])[1] / steps,
            "ratio": median_ratio, "ratio_q1": q1, "ratio_q3": q3,
            "mean_ratio": statistics.fmean(times[regime]) / statistics.fmean(times["conventional"]),
            "wall_ratio": common.quartiles(wall_ratios[regime])[1],
            "epoch_cpu_s": timings.cpu[regime], "epoch_wall_s": timings.wall[regime],
        }
    step_s = rows["conventional"]["median_step_s"]
    return {
        "label": case.label, "model": case.model, "optimizer": case.optimizer,
        "input_shape": list(case.data.input_shape), "train_examples": len(case.data.train),
        "steps_per_round": steps, "layer_groups": groups, "clock": clock, "regimes": rows,
        "lerac_bookkeeping_share": bookkeeping_share(trainers, steps * epochs, step_s),
        "noise_floor": abs(rows[CONTROL]["ratio"] - 1),
    }


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    return [
        [regime, str(result["layer_groups"]), f"{1000 * row['median_step_s']:.1f}", f"{row['ratio']:.3f}x",
         f"{row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}", f"{row['mean_ratio']:.3f}x", f"{row['wall_ratio']:.2f}x"]
        for regime, row in result["regimes"].items()
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds per case")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds per case")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="training steps per round")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per example (BERT)")
    parser.add_argument("--vocab", type=int, default=8000, help="vocabulary size (BERT)")
    parser.add_argument("--mels", type=int, default=64, help="mel bands of the spectrograms (SepTr)")
    parser.add_argument("--frames", type=int, default=101, help="frames of the spectrograms (SepTr)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    device = resolve_device(args.device)
    clock = "wall" if device.type == "cuda" else "cpu"
    train = args.steps * args.batch_size
    cases = [
        Case(f"bert / tokens 3x{args.max_length}", "bert", "adamw", 1e-4,
             random_text(train=train, length=args.max_length, vocab=args.vocab)),
        Case(f"septr / spectrograms 1x{args.mels}x{args.frames}", "septr", "adamax", 2e-3,
             random_spectrograms(train=train, mels=args.mels, frames=args.frames, classes=50)),
    ]
    results = []
    for case in cases:
        result = measure(case, args, clock)
        results.append(result)
        print(common.text_table(HEADERS, table_rows(result)))
        print(f"LeRaC's rate bookkeeping alone: {100 * result['lerac_bookkeeping_share']:+.4f}% of a step; "
              f"A/A control off by {100 * result['noise_floor']:.1f}%")
    targets = [common.Target(f"LeRaC step time / conventional, {r['label']}", r["regimes"]["lerac"]["ratio"],
                             LERAC_BOUND, at_most=True) for r in results]
    info = common.machine_info(device)
    print(f"\n{common.machine_line(info)}")
    for target in targets:
        print(target.line())
    seconds = time.perf_counter() - started
    print(f"took {seconds:.0f} s")
    common.write_json(NAME, {"script": NAME, "machine": info, "settings": vars(args), "cases": results,
                             "targets": [t.as_dict() for t in targets], "seconds": seconds})
    sections = [
        f"## Text and audio: LeRaC overhead per step (`benchmarks/{NAME}.py`)\n",
        f"Machine: {common.machine_line(info)}, {args.threads} torch thread(s).\n",
        f"Time of the Trainer's training steps (no evaluation; {clock} time"
        f"{' of the process, the wall ratio beside it' if clock == 'cpu' else ''}) of conventional "
        "training and LeRaC (curriculum over the whole run, so every step pays for the rate rise), "
        f"interleaved in {args.rounds} rounds of {args.steps} steps after {args.warmup} warm-up. "
        "vs conventional = median over rounds of LeRaC's time over conventional's in the same round; "
        "IQR = its spread; 'conventional again' is the same conventional run timed once more "
        "(an A/A control: how far noise alone moves a ratio). BERT: the default small BERT (4 layers, hidden 128), AdamW; SepTr: the "
        "default (3 blocks, dim 128, 4x4 patches), Adamax. Random tensors held in memory.\n",
    ]
    for r in results:
        sections.append(
            f"### {r['label']}\n\n{r['train_examples']} examples per round, batch {args.batch_size}, "
            f"{r['optimizer']}.\n\n{common.markdown_table(HEADERS, table_rows(r))}\n\n"
            f"LeRaC's rate bookkeeping alone: {100 * r['lerac_bookkeeping_share']:+.4f}% of a step; "
            f"the A/A control is off by {100 * r['noise_floor']:.1f}%.\n"
        )
    sections.append("\n".join(f"- {t.line()}" for t in targets) + "\n")
    sections.append(common.rerun_line(NAME, seconds))
    common.update_results_md(NAME, "\n".join(sections))


if __name__ == "__main__":
    main()
