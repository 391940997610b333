"""Train ``sam_shapes``, a small SAM, on synthetic scenes and write it as an official
segment-anything checkpoint (``torch.save`` of the state dict: ``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``).

    python scripts/train_sam_shapes.py                      # PyTorch reference: the shipped file
    python scripts/train_sam_shapes.py --framework flax -o /tmp/sam_shapes_flax.pth
    KERAS_BACKEND=jax python scripts/train_sam_shapes.py --framework keras -o /tmp/k.pth

The initial weights are the reference's (``torch.manual_seed(seed)``, PyTorch's initializers),
handed to Keras / Flax through an official-layout file and the one-line loader; every framework
then trains on the same batches (``zoo.sam_training.make_batch(config, recipe, seed, step)``)
with the same recipe (``zoo.sam_training.ShapesRecipe``). Keras and Flax results are converted
back to the official layout with ``weight_convert``. The script ends with the held-out
evaluation (``zoo.sam_training.evaluate``, seed ``EVAL_SEED``) of the file it wrote, through
the reference ``SamPredictor``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402  (before TensorFlow, always)

from zoo import sam_training  # noqa: E402

#: the held-out scenes' seed (training batches come from ``default_rng((seed, step))``)
EVAL_SEED = 20_240_601
DEFAULT_OUTPUT = sam_training.SAM_SHAPES_WEIGHTS


def initial_model(seed: int):
    """The reference ``sam_shapes`` with PyTorch's initialization under ``seed``."""
    import zoo.models

    torch.manual_seed(seed)
    return zoo.models.create_model("sam_shapes")


def train_torch(recipe, seed: int, output: Path, log) -> list[float]:
    model = initial_model(seed)
    losses = sam_training.reference_train(model, recipe, seed, log)
    torch.save(model.state_dict(), output)
    return losses


def train_port(framework: str, recipe, seed: int, output: Path, log) -> list[float]:
    """Keras or Flax from the reference's initial weights; the result converted to ``output``."""
    from weight_convert import convert

    with tempfile.TemporaryDirectory() as tmp:
        start = Path(tmp) / "initial.pth"
        torch.save(initial_model(seed).state_dict(), start)
        if framework == "keras":
            import ports.keras.models
            from ports.keras import sam_training as keras_training

            model = ports.keras.models.create_model("sam_shapes", checkpoint=start)
            losses = keras_training.fit(model, recipe, seed, log)
            saved = Path(tmp) / "trained.keras"
            model.save(saved)
        else:
            import ports.flax.models
            from ports.flax import sam_training as flax_training
            from ports.flax import serialization

            model = ports.flax.models.create_model("sam_shapes", checkpoint=start)
            losses = flax_training.train(model, recipe, seed, log)
            saved = Path(tmp) / "trained.safetensors"
            serialization.save(model, saved)
        convert.convert(saved, "torch", output, force=True)
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=("torch", "keras", "flax"), default="torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=sam_training.ShapesRecipe.steps)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--eval-scenes", type=int, default=40, help="0: no evaluation")
    parser.add_argument("--json", type=Path, help="write the losses and figures here")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="PyTorch's intra-op threads (default 1: the same weights whatever the core count, "
        "and on a shared machine two threads waiting for each other run 6x slower here)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    recipe = sam_training.with_steps(sam_training.ShapesRecipe(), args.steps)
    every = max(recipe.steps // 20, 1)

    def log(step: int, loss: float, seconds: float) -> None:
        if step % every == 0 or step == recipe.steps - 1:
            print(f"step {step:5d}  loss {loss:.4f}  {seconds:7.1f} s", flush=True)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.framework == "torch":
        losses = train_torch(recipe, args.seed, args.output, log)
    else:
        losses = train_port(args.framework, recipe, args.seed, args.output, log)
    seconds = time.perf_counter() - start
    tail = losses[-max(recipe.steps // 10, 1) :]
    report = {
        "framework": args.framework,
        "seed": args.seed,
        "threads": args.threads,
        "steps": recipe.steps,
        "seconds": round(seconds, 1),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "mean_last_10pct": sum(tail) / len(tail),
        "bytes": args.output.stat().st_size,
    }
    print(f"trained in {seconds:.0f} s; wrote {args.output} ({report['bytes']} bytes)")
    if args.eval_scenes:
        import zoo.models
        from zoo.predictor import SamPredictor

        model = zoo.models.create_model(checkpoint=args.output)
        report["held_out"] = sam_training.evaluate(SamPredictor(model), EVAL_SEED, args.eval_scenes)
        print("held-out mean IoU:", json.dumps(report["held_out"]))
    if args.json:
        args.json.write_text(json.dumps({**report, "losses": losses}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
