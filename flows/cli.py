"""The ``flows`` command. Errors print one line and exit non-zero; ``--debug`` shows the traceback."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from flows import choices
from flows.errors import FlowsError, RunInterrupted
from host.errors import HostError

HOST_ERROR_EXIT = 9  # a deploy package or accelerator problem (host.errors)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="From quantisation-aware training to a FINN dataflow accelerator on a PYNQ board.")
STATE = {"debug": False}


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"flows (qnn-flows) {version()}")
        raise typer.Exit()


def version() -> str:
    """The installed distribution's version (pyproject.toml); 'unknown' when run from a tree not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("qnn-flows")
    except PackageNotFoundError:
        return "unknown (not installed)"


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
          _: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")):
    STATE["debug"] = debug


@app.command()
def build(
    ctx: typer.Context,
    board: str = typer.Option("pynq-z2", **choices.BOARD.typer_args, help="Target board: a name, or a board file."),
    model: Optional[str] = typer.Option(None, **choices.MODEL.typer_args, help="Zoo model (default tfc-w1a1)."),
    model_config: Optional[Path] = typer.Option(None, help="YAML/JSON per-layer bit widths instead of --model."),
    checkpoint: Optional[Path] = typer.Option(None, help="Trained qnn-flows checkpoint instead of training."),
    onnx: Optional[Path] = typer.Option(None, help="QONNX model instead of a checkpoint."),
    data: Optional[str] = typer.Option(None, **choices.DATA.typer_args, help="Dataset: digits (bundled; the "
                                       "default), digits32 (bundled digits as 32x32 RGB; the default for cnv)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset files."),
    data_file: Optional[Path] = typer.Option(None, help="An --onnx model's own labelled data: .npz with x_test, "
                                             "y_test (x_train, y_train optional), or an .npy/.csv table with "
                                             "the label last (docs/own-models.md)."),
    input_datatype: Optional[str] = typer.Option(None, help="An --onnx model's input datatype where the model "
                                                 "does not declare one, e.g. UINT8, INT4, BIPOLAR, BINARY."),
    no_verify_checksums: bool = typer.Option(False, "--no-verify-checksums", help="Accept one's own dataset copy."),
    target_fps: Optional[float] = typer.Option(None, help="Fold for this many images/s."),
    folding: Optional[Path] = typer.Option(None, help="Folding JSON to apply (edit the one a build writes)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default build/<model>_<board>)."),
    from_step: Optional[str] = typer.Option(None, "--from", **choices.STEP.typer_args, help="Resume at this step."),
    to_step: Optional[str] = typer.Option(None, "--to", **choices.STEP.typer_args, help="Stop after this step."),
    allow_overflow: bool = typer.Option(False, help="Continue when the design does not fit the board."),
    input_quant: str = typer.Option("fpga", **choices.INPUT_QUANT.typer_args,
                                    help="Where the input quantiser runs: fpga (a Thresholding layer on "
                                    "the raw 8-bit pixels) or host (the host quantises, the DMA streams the "
                                    "narrow values; docs/compression.md)."),
    epochs: int = typer.Option(40, help="Training epochs when no checkpoint is given."),
    seed: int = typer.Option(0, help="Training seed."),
    add_step: Optional[list[str]] = typer.Option(None, "--add-step", help="AFTER=package.module:function: run a "
                                                 "step of one's own right after step AFTER (repeatable)."),
    config: Optional[Path] = typer.Option(None, "--config", help="A config.json a build wrote (or a JSON object of "
                                          "BuildConfig fields): build that; only --out, --from, --to may be added."),
):
    """Train (or load), export, streamline, fold, estimate, verify and package one model for a board."""
    from flows.config import BuildConfig, TrainOptions

    if config is not None:
        return _run(lambda: _build(_config_file(ctx, config, out, from_step, to_step)))
    _check_numbers({"--target-fps": target_fps})
    _run(lambda: _build(BuildConfig(
        board=board, model=model, model_config=model_config, checkpoint=checkpoint, onnx=onnx, data=data, data_dir=data_dir,
        data_file=data_file, input_datatype=input_datatype, verify_checksums=not no_verify_checksums, target_fps=target_fps, folding=folding, out=out,
        from_step=from_step, to_step=to_step, allow_overflow=allow_overflow, input_quant=input_quant,
        train=TrainOptions(epochs=epochs, seed=seed), steps=_steps_with(add_step))))


def _steps_with(add_step):
    from flows.build import steps_with

    return steps_with(add_step)


def _config_file(ctx: typer.Context, path: Path, out, from_step, to_step):
    """The BuildConfig of ``--config FILE`` with --out/--from/--to applied; any other option is refused
    (the file holds the whole build: edit it instead)."""
    from dataclasses import replace

    from flows.config import load_build_config
    from flows.errors import ConfigError

    given = [p.opts[0] for p in ctx.command.params if p.name not in ("config", "out", "from_step", "to_step")
             and getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") != "DEFAULT"]
    if given:
        raise ConfigError(f"--config {path} holds the whole build; {', '.join(given)} cannot be added to it: edit the "
                          "file (only --out, --from and --to go with --config)")
    cfg = load_build_config(path)
    return replace(cfg, **{k: v for k, v in (("out", out), ("from_step", from_step), ("to_step", to_step)) if v})


def _build(cfg) -> None:
    from rich.console import Console

    from flows.build import Build, run_build
    from flows.report import collect, print_tables, tables

    console = Console(stderr=True)
    start = time.perf_counter()
    names = [step.name for step in Build(cfg).steps]

    def done(name: str, report: dict) -> None:
        idx = names.index(name)
        console.print(f"[{idx:2d}/{len(names) - 1}] {name:<11} {report.get('seconds', 0):6.2f} s")
        if name == "bitfile" and report.get("reason"):
            console.print(f"        {report['reason']}")
        for line in report.get("folding_file_report", []):  # --folding FILE: applied, matched, defaulted
            console.print(f"        {line}", highlight=False)

    run_build(cfg, on_done=done)
    b = Build(cfg)
    print_tables(tables(collect(b), b.board), Console())
    console.print(f"run: {cfg.run_dir}  ({time.perf_counter() - start:.1f} s)")


@app.command("train")
def train_cmd(
    model: str = typer.Option("tfc-w1a1", **choices.MODEL.typer_args, help="Zoo model."),
    model_config: Optional[Path] = typer.Option(None, help="YAML/JSON per-layer bit widths instead of --model."),
    data: Optional[str] = typer.Option(None, **choices.DATA.typer_args, help="Dataset: digits (bundled; the "
                                       "default), digits32 (bundled digits as 32x32 RGB; the default for cnv)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset files."),
    no_verify_checksums: bool = typer.Option(False, "--no-verify-checksums", help="Accept one's own dataset copy."),
    epochs: int = typer.Option(40, help="Training epochs (the one-cycle schedule spans them all)."),
    batch_size: int = typer.Option(128, help="Images per batch."),
    lr: float = typer.Option(0.05, help="Peak learning rate (Adam, one-cycle)."),
    seed: int = typer.Option(0, help="Seed of initialisation, shuffling and dropout."),
    dropout: float = typer.Option(0.2, help="Dropout probability of the MLPs (Brevitas uses 0.2)."),
    shift: int = typer.Option(0, help="Augmentation: move each training image by up to this many pixels."),
    device: str = typer.Option("cpu", help="cpu, or cuda when a GPU is present."),
    out: Optional[Path] = typer.Option(None, help="Checkpoint to write (default <model>_<data>.pt); never overwritten."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run saved in <out>.last."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for PyTorch (1 is fastest on a busy machine)."),
    compact: bool = typer.Option(False, "--compact", help="Store weights as their quantised int8 values "
                                 "(same model, several times smaller; for sharing, not for more training)."),
):
    """Train a zoo model (quantisation-aware) and write a checkpoint with its config and metrics."""
    _check_numbers({"--lr": lr, "--dropout": dropout})
    _run(lambda: _train(model, model_config, data, data_dir, not no_verify_checksums,
                        dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, dropout=dropout,
                             shift=shift), out, resume,
                        threads, compact))


def _model_spec(model: str, model_config: Optional[Path]):
    from qat.models import load_model_config, parse_model_name

    return load_model_config(model_config) if model_config else parse_model_name(model)


def _load_data(data: str, data_dir: Optional[Path], verify: bool):
    from qat.data import check_data_option, load_dataset

    check_data_option(data, data_dir)
    return load_dataset(data, data_dir, verify=verify)


def _train(model, model_config, data, data_dir, verify, options: dict, out, resume, threads=None,
           compact=False) -> None:
    import torch

    from flows.errors import ConfigError
    from qat.train import TrainConfig, check_device, train_to_file

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)

    from flows.config import default_data

    spec = _model_spec(model, model_config)
    data = data or default_data(spec.arch)
    cfg = TrainConfig(**options)
    check_device(cfg.device)
    out = out or Path(f"{spec.name}_{data}.pt")
    ds = _load_data(data, data_dir, verify)
    try:
        ckpt = train_to_file(spec, ds, cfg, out, resume=resume, compact=compact)
    except KeyboardInterrupt:
        from qat.train import last_path

        last = last_path(out)
        how = (f"the epochs done are saved in {last}: resume with the same command plus --resume"
               if last.is_file() else "no epoch had finished: run the same command again")
        raise RunInterrupted(f"training interrupted; {how}") from None
    typer.echo(f"{spec.name} on {ds.name}: test accuracy {100 * ckpt.metrics['test_accuracy']:.2f}% "
               f"({len(ds.test)} images) after {cfg.epochs} epochs, {ckpt.metrics['train_seconds']:.1f} s "
               f"training; wrote {out}")


@app.command("eval")
def eval_cmd(
    checkpoint: Path = typer.Argument(..., help="A qnn-flows checkpoint."),
    data: Optional[str] = typer.Option(None, **choices.DATA.typer_args,
                                       help="Dataset to evaluate on (default: the checkpoint's)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset files."),
    no_verify_checksums: bool = typer.Option(False, "--no-verify-checksums", help="Accept one's own dataset copy."),
):
    """Accuracy of a checkpoint on a test split, beside the figure recorded at training."""
    _run(lambda: _eval(checkpoint, data, data_dir, not no_verify_checksums))


def _eval(path: Path, data, data_dir, verify: bool) -> None:
    from flows.errors import DatasetError
    from qat.train import accuracy, load_checkpoint

    ckpt = load_checkpoint(path)
    ds = _load_data(data or ckpt.data.name, data_dir, verify)
    if tuple(ds.image_shape) != tuple(ckpt.data.image_shape):
        raise DatasetError(f"{path} takes {ckpt.data.image_shape} images but {ds.name} has {ds.image_shape}")
    acc = accuracy(ckpt.model(), ds.test.images, ds.test.labels)
    recorded = ckpt.metrics.get("test_accuracy")
    note = f" (recorded at training on {ckpt.data.name}: {100 * recorded:.2f}%)" if recorded is not None else ""
    typer.echo(f"{ckpt.spec.name} on {ds.name} test split: accuracy {100 * acc:.2f}% "
               f"({round(acc * len(ds.test))}/{len(ds.test)}){note}")


@app.command("bench")
def bench_cmd(
    deploy_dir: Path = typer.Argument(..., help="A build's deploy/ folder, or its run folder once it reached "
                                     "its estimate (a bench package is made from the folded design)."),
    targets: Optional[str] = typer.Option(None, **choices.TARGETS.typer_args, help="Comma-separated targets "
                                          "(default: all), e.g. cpu-brevitas,numpy-executor,fpga-sim."),
    batch: str = typer.Option("1,16,256,1024,10000", help="Batch sizes of the throughput sweep."),
    repeats: int = typer.Option(20, help="Timed runs per batch size (batch-1 latency takes 5x as many)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default <run>/bench)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint of the torch targets "
                                              "(default <run>/train/checkpoint.pt)."),
    threads: int = typer.Option(1, help="Intra-op threads of torch and onnxruntime."),
):
    """Accuracy, latency and throughput of the FPGA design (on a board, else modelled) against CPU/GPU targets."""
    _run(lambda: _bench(deploy_dir, targets, batch, repeats, out, checkpoint, threads))


def _bench(deploy_dir: Path, targets, batch: str, repeats: int, out, checkpoint, threads: int) -> None:
    from rich.console import Console

    from flows import bench
    from flows.errors import ConfigError

    if repeats < 1:
        raise ConfigError(f"--repeats {repeats} must be >= 1")
    console = Console(stderr=True)
    report = bench.run(deploy_dir, bench.parse_targets(targets), bench.parse_batches(batch), repeats, out,
                       checkpoint, progress=lambda name: console.print(f"bench {name}"), threads=threads)
    bench.print_table(report, Console(width=max(Console().width, 140)))
    console.print(f"wrote {report['paths']['json'].parent}")
    bench.check_any_measured(report["results"])


def _check_numbers(options: dict) -> None:
    """One error line (exit 2) for a NaN or infinite float option: typer reads 'nan' and 'inf' as floats,
    and NaN passes every range test. Ranges are checked where the options are used."""
    from flows.errors import finite

    _run(lambda: [finite(name, value) for name, value in options.items() if value is not None])


@app.command("search")
def search_cmd(
    model: str = typer.Option("tfc", **choices.SEARCH_MODEL.typer_args, help="Architecture to search, or a zoo "
                              "name (its architecture)."),
    board: str = typer.Option("pynq-z2", **choices.BOARD.typer_args, help="Target board: a name, or a board file."),
    data: Optional[str] = typer.Option(None, **choices.DATA.typer_args, help="Dataset: digits (bundled; the "
                                       "default), digits32 (bundled digits as 32x32 RGB; the default for cnv)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset files."),
    no_verify_checksums: bool = typer.Option(False, "--no-verify-checksums", help="Accept one's own dataset copy."),
    target_accuracy: float = typer.Option(0.9, help="Accuracy a design must reach (validation split), e.g. 0.98."),
    trials: int = typer.Option(30, help="Finished trials the study should hold (across all workers)."),
    space: Optional[Path] = typer.Option(None, help="YAML/JSON search space (default: every layer's bits, "
                                         "pruning ratio and low rank, input pixels, distillation; see "
                                         "flows/search/space.py)."),
    sampler: str = typer.Option("tpe", **choices.SAMPLER.typer_args, help="Optuna sampler (rf: random-forest "
                                "surrogate)."),
    epochs: int = typer.Option(10, help="Training epochs per trial (and per retraining)."),
    seeds: int = typer.Option(3, help="Seeds each Pareto point and uniform model is retrained with."),
    stop_margin: float = typer.Option(0.1, help="Stop a trial this far below the target at half its epochs."),
    dropout: float = typer.Option(0.2, help="Dropout of the MLPs in training (0 suits short schedules)."),
    shift: int = typer.Option(0, help="Augmentation: training images moved by up to this many pixels."),
    seed: int = typer.Option(0, help="Seed of the sampler and of training."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL, e.g. postgresql://user@host/db "
                                          "(default: SQLite in <out>/study.db)."),
    worker: bool = typer.Option(False, "--worker", help="Only run trials of the shared study; no report."),
    threads: int = typer.Option(1, help="PyTorch threads per worker."),
    jobs: int = typer.Option(1, help="Processes retraining the report's designs at once (after the trials)."),
    out: Path = typer.Option(Path("build/search"), help="Run folder (study, trials, report)."),
):
    """Search per-layer bit widths, pruning and low rank, input pixels and distillation for the cheapest design at
    a target accuracy (Pareto report)."""
    from flows.config import default_data

    _run(lambda: _search(model, dict(board=board, data=data or default_data(model), data_dir=data_dir,
                                     verify_checksums=not no_verify_checksums, target_accuracy=target_accuracy,
                                     trials=trials, space=space, sampler=sampler, epochs=epochs, seeds=seeds,
                                     stop_margin=stop_margin, dropout=dropout, shift=shift,
                                     seed=seed, storage=storage, worker=worker, threads=threads, jobs=jobs,
                                     out=out)))


def _search(model: str, options: dict) -> None:
    from rich.console import Console

    from flows.errors import require_package

    require_package("optuna", "install the search extra: pip install 'qnn-flows[search]'")
    from flows.search import SearchConfig, search

    console = Console(stderr=True)
    report = search(SearchConfig(arch=model.split("-")[0], **options), progress=console.print)
    if report is None:
        console.print("worker done: the study holds the requested trials")
        return
    typer.echo((Path(options["out"]) / "report.md").read_text())
    console.print(f"wrote {Path(options['out']) / 'report.md'} and report.json, plots")


@app.command("compress")
def compress_cmd(
    config: Optional[Path] = typer.Option(None, help="YAML/JSON compression config (options below override it)."),
    model: Optional[str] = typer.Option(None, **choices.MODEL.typer_args, help="Zoo model to train first."),
    checkpoint: Optional[Path] = typer.Option(None, help="Trained checkpoint to compress instead of --model."),
    data: Optional[str] = typer.Option(None, **choices.DATA.typer_args, help="Dataset."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset files."),
    distill: Optional[Path] = typer.Option(None, help="Teacher: a flows checkpoint, TorchScript file or ONNX file; "
                                            "distil every fine-tune (applied first)."),
    prune: Optional[str] = typer.Option(None, help="Structured pruning ratio in [0, 1), or one per layer: 0.5,0.75."),
    prune_schedule: str = typer.Option("oneshot", **choices.SCHEDULE.typer_args,
                                       help="Pruning schedule (agp: gradual, Zhu & Gupta)."),
    input_bits: Optional[int] = typer.Option(None, help="Quantise the input to this many bits (applied last)."),
    technique: Optional[list[str]] = typer.Option(None, help='Any registered technique as JSON, repeatable: '
                                                  '\'{"name": "prune", "ratio": 0.5}\'.'),
    epochs: Optional[int] = typer.Option(None, help="Fine-tuning epochs of each technique (default 5)."),
    base_epochs: Optional[int] = typer.Option(None, help="Training epochs of --model (default 20)."),
    lr: Optional[float] = typer.Option(None, help="Peak fine-tuning learning rate (default 0.01)."),
    seed: Optional[int] = typer.Option(None, help="Seed (default 0)."),
    board: Optional[str] = typer.Option(None, **choices.BOARD.typer_args,
                                        help="Board of the FPGA estimate (default pynq-z2)."),
    candidate: Optional[str] = typer.Option(None, **choices.CANDIDATE.typer_args,
                                            help="How far to take the candidate (full: verify, package, CPU bench)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (resumable; finished steps are reused)."),
    save_config: Optional[Path] = typer.Option(None, help="Write the resulting config here and stop."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for PyTorch (default 1)."),
):
    """Compress a model (structured pruning, fewer input bits, distillation, ...) and report the candidate."""
    options = dict(locals())
    from qat.compress.cli import run_compress

    _run(lambda: run_compress(options))


@app.command("sweep")
def sweep_cmd(
    archs: Optional[str] = typer.Option(None, help="Comma-separated architectures: tfc, sfc, lfc, lenet, cnv "
                                        "(default: the MLPs)."),
    precisions: Optional[str] = typer.Option(None, help="Comma-separated precisions, e.g. w1a1,w2a2 (default: "
                                             "all of the zoo's)."),
    models: Optional[str] = typer.Option(None, help="Comma-separated zoo names instead of --archs x --precisions."),
    boards: str = typer.Option("pynq-z2", help="Comma-separated boards (see boards/); one row per model and board."),
    data: str = typer.Option("digits", help="Dataset: digits, digits32 (for cnv), mnist, fashion-mnist, cifar10."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset files."),
    epochs: int = typer.Option(1, help="Training epochs per model (the design hardly depends on them)."),
    verify: bool = typer.Option(False, "--verify", help="Also verify each design on the whole test split (slower)."),
    out: Path = typer.Option(Path("build/sweep"), help="Sweep folder: runs/, rows/ (resumable), sweep.json, sweep.md."),
):
    """The zoo across precisions and boards in one table: fit and estimates (and with --verify, accuracy)."""
    from flows.sweep import SweepConfig, check_rows, run_sweep, split, zoo_models

    def show(row: dict, reused: bool) -> None:
        what = row.get("error") or (f"{row['cycles_per_image']:,.1f} cycles/image, {row['bound']}, "
                                    f"fits: {'yes' if row['fits'] else 'no'}")
        typer.echo(f"{row['model']} on {row['board']}: {what}" + (" (done before)" if reused else ""), err=True)

    def sweep() -> None:
        cfg = SweepConfig(zoo_models(archs, precisions, models), tuple(split(boards)), data, data_dir, epochs,
                          verify, out)
        result = run_sweep(cfg, on_row=show)
        typer.echo(result["paths"]["markdown"].read_text())
        typer.echo(f"wrote {result['paths']['json']} and {result['paths']['markdown']}", err=True)
        check_rows(result["rows"])

    _run(sweep)


def _run(fn) -> None:
    try:
        fn()
    except KeyboardInterrupt:  # outside a build step (a step's Ctrl-C arrives as RunInterrupted)
        if STATE["debug"]:
            raise
        _fail("interrupted (Ctrl-C); what was written before is kept", RunInterrupted.exit_code)
    except FlowsError as exc:
        if STATE["debug"]:
            raise
        _fail(str(exc), exc.exit_code)
    except HostError as exc:  # board-side code (host/) knows nothing of FlowsError
        if STATE["debug"]:
            raise
        _fail(str(exc), HOST_ERROR_EXIT)


def _fail(message: str, code: int) -> None:
    """Print the one error line (training's progress display has closed itself: qat.progress)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code) from None


def main() -> int:
    """Run the command line. A usage error (an unknown option, a value outside its set) is one line and
    exit 2, as a bad option found later is; ``flows`` alone prints the help."""
    try:
        return app(standalone_mode=False) or 0
    except typer.TyperException as exc:  # typer's (vendored) click errors: usage errors, Abort
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()
        elif hasattr(exc, "format_message"):
            typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        else:
            typer.echo("error: aborted", err=True)
        return getattr(exc, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
