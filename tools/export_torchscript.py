#!/usr/bin/env python3
"""Export a torchvision ResNet as a TorchScript model that DnD Studio can dissect.

Run this where PyTorch and torchvision are installed (DnD Studio itself does not need Python).
It writes two files:

  OUT.pt    a TorchScript archive whose forward(x) takes a float batch N x 3 x H x W, already
            resized, centre-cropped and normalised, and returns a *tuple* of tensors: the outputs
            of the requested layers, in the order given by --layers (N x C x H x W for
            convolutional stages, N x C for fully connected layers);
  OUT.json  the manifest DnD Studio reads beside it: model name, the layers (name and kind, in
            output order), input size, resize, mean/std on the 0-255 scale and class names.

Examples:

  # ImageNet ResNet-50 with torchvision's weights (downloaded by torchvision, or from its cache)
  python export_torchscript.py --arch resnet50 --weights IMAGENET1K_V1 \\
      --layers layer1,layer2,layer3,layer4,fc --out resnet50.pt --classes imagenet

  # A fine-tuned ResNet-18 from a state-dict file, class names from a text file
  python export_torchscript.py --arch resnet18 --weights my_resnet18.pth \\
      --layers layer3,layer4,fc --out my_resnet18.pt --classes my_classes.txt

  # ResNet-18 trained on Places365 (CSAIL checkpoint resnet18_places365.pth.tar and its
  # categories_places365.txt)
  python export_torchscript.py --arch resnet18 --places365 \\
      --weights resnet18_places365.pth.tar --classes categories_places365.txt \\
      --layers layer1,layer2,layer3,layer4,fc --out resnet18_places365.pt

See tools/README.md for registering the result with DnD Studio.
"""

import argparse
import json
import sys
from pathlib import Path

SUPPORTED_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

# torchvision's ImageNet normalisation, given on the 0-1 scale; the manifest wants 0-255.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The name of the final class-logit module of the supported architectures.
CLASSIFIER_MODULE = "fc"


def fail(message):
    """Stops with a one-line error (no traceback: these are usage errors)."""
    sys.exit("export_torchscript.py: error: " + message)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Export a torchvision ResNet to TorchScript plus a DnD Studio manifest.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples:", 1)[1],
    )
    p.add_argument("--arch", required=True, choices=SUPPORTED_ARCHS, help="torchvision architecture")
    p.add_argument(
        "--weights",
        required=True,
        help="a torchvision weights name (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT) or the path of a "
        "checkpoint / state-dict file (.pth, .pt, .pth.tar)",
    )
    p.add_argument(
        "--layers",
        default="layer1,layer2,layer3,layer4,fc",
        help="comma-separated module names whose outputs the model returns, in this order "
        "(default: %(default)s); any name of model.named_modules() works, e.g. layer4.1.conv2",
    )
    p.add_argument("--out", required=True, type=Path, help="output TorchScript file, e.g. resnet50.pt")
    p.add_argument(
        "--classes",
        help="'imagenet' (torchvision's 1000 ImageNet names) or a text file with one class name per "
        "line (Places365's 'categories_places365.txt' format, '/a/airfield 0', is understood)",
    )
    p.add_argument(
        "--places365",
        action="store_true",
        help="the checkpoint is a Places365 model (365 classes; 'module.' prefixes are stripped)",
    )
    p.add_argument("--name", help="model name in the manifest (default: ARCH-imagenet, ARCH-places365 or ARCH-custom)")
    p.add_argument("--input-size", type=int, default=224, help="square input size in pixels (default 224)")
    p.add_argument(
        "--resize",
        type=int,
        default=None,
        help="shorter side before the centre crop (default: round(input_size / 0.875), 256 for 224)",
    )
    p.add_argument(
        "--method",
        choices=("fx", "hooks"),
        default="fx",
        help="how layer outputs are taken: torchvision's create_feature_extractor (default; stops "
        "after the deepest layer) or forward hooks (works for any module, runs the whole network)",
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow unpickling arbitrary Python objects from --weights if the safe loader "
        "(torch.load(weights_only=True)) refuses it. Only for files you trust.",
    )
    return p.parse_args(argv)


def load_checkpoint(path, trust):
    """Returns a state dict (parameter name -> tensor) from a checkpoint file, loaded on the CPU."""
    import torch

    try:
        # weights_only=True: only tensors and plain containers are unpickled, never arbitrary code.
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except TypeError:
        # PyTorch < 1.13 has no weights_only argument.
        if not trust:
            fail("this PyTorch cannot load checkpoints safely (no weights_only); upgrade it or pass --trust-checkpoint")
        ckpt = torch.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - report any unpickling failure the same way
        if not trust:
            fail(
                f"cannot read {path} with the safe loader (torch.load(weights_only=True)): {e}\n"
                "If you trust this file, re-run with --trust-checkpoint."
            )
        print(f"warning: loading {path} with weights_only=False (--trust-checkpoint)", file=sys.stderr)
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)

    if isinstance(ckpt, torch.nn.Module):
        state = ckpt.state_dict()
    elif isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        state = ckpt["state_dict"]  # e.g. the CSAIL Places365 checkpoints
    elif isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        state = ckpt["model"]
    elif isinstance(ckpt, dict):
        state = ckpt
    else:
        fail(f"{path} holds a {type(ckpt).__name__}, not a state dict or a checkpoint dict")

    # Checkpoints saved from nn.DataParallel prefix every name with 'module.'.
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if not state:
        fail(f"{path} contains no tensors")
    return state


def build_model(args):
    """Returns (model in eval mode, torchvision weights enum member or None, weights description)."""
    import torchvision

    constructor = getattr(torchvision.models, args.arch)
    candidate = Path(args.weights)
    if candidate.exists():
        state = load_checkpoint(candidate, args.trust_checkpoint)
        fc_weight = state.get(CLASSIFIER_MODULE + ".weight")
        if fc_weight is None:
            fail(f"{candidate} has no '{CLASSIFIER_MODULE}.weight'; is it a {args.arch} checkpoint?")
        num_classes = int(fc_weight.shape[0])
        if args.places365 and num_classes != 365:
            fail(f"--places365 given but the checkpoint's classifier has {num_classes} outputs, not 365")
        model = constructor(weights=None, num_classes=num_classes)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            # The message lists every mismatching tensor; the first few say enough.
            lines = [l.strip()[:300] for l in str(e).splitlines() if l.strip()]
            more = f" (and {len(lines) - 4} more)" if len(lines) > 4 else ""
            fail(f"{candidate} does not fit torchvision's {args.arch}: " + " ".join(lines[:4]) + more)
        return model.eval(), None, str(candidate.name)

    if args.places365:
        fail("--places365 needs --weights to be the path of the Places365 checkpoint file")
    try:
        enum = torchvision.models.get_model_weights(args.arch)
    except AttributeError:
        fail("this torchvision is too old (< 0.14) for named weights; pass a checkpoint path instead")
    try:
        weights = enum[args.weights.split(".")[-1]]
    except KeyError:
        names = ", ".join(["DEFAULT"] + [w.name for w in enum])
        fail(f"--weights {args.weights!r} is neither an existing file nor one of {names}")
    try:
        model = constructor(weights=weights)  # torchvision downloads them or reuses its cache
    except Exception as e:  # noqa: BLE001 - typically a failed download
        fail(
            f"torchvision could not get the {weights.name} weights of {args.arch} ({e}); run once with "
            f"internet access (they are cached under $TORCH_HOME/hub/checkpoints), or download "
            f"{weights.url} yourself and pass that file to --weights"
        )
    return model.eval(), weights, f"torchvision {type(weights).__name__}.{weights.name}"


def read_class_names(args, weights):
    """Class names for the classifier, or None."""
    if args.classes is None:
        if weights is not None:
            return list(weights.meta["categories"])
        if args.places365:
            print("warning: no --classes file; the manifest will have no class names", file=sys.stderr)
        return None
    if args.classes == "imagenet":
        import torchvision

        # Static metadata shipped inside torchvision: nothing is downloaded.
        return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])

    path = Path(args.classes)
    if not path.is_file():
        fail(f"--classes {args.classes!r} is neither 'imagenet' nor an existing file")
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        # Places365 format: '/a/airfield 0', '/b/bakery/shop 37' -> 'airfield', 'bakery/shop'.
        if line.startswith("/") and len(parts) == 2 and parts[1].isdigit():
            line = parts[0][3:].replace("_", " ")
        names.append(line)
    return names


def make_wrapper(model, layers, method):
    """A module whose forward(x) returns the outputs of `layers` as a tuple, in order."""
    import torch

    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules or n == ""]
    if unknown:
        top = ", ".join(n for n, _ in model.named_children())
        fail(f"unknown layer(s) {', '.join(unknown)}; top-level modules are: {top} (deeper ones like layer4.1.conv2 work too)")

    if method == "fx":
        from torchvision.models.feature_extraction import create_feature_extractor

        # Returns a dict {name: output}; the graph is cut after the deepest requested layer.
        extractor = create_feature_extractor(model, return_nodes={n: n for n in layers})

        class FxLayers(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.extractor = extractor
                self.names = list(layers)

            def forward(self, x):
                out = self.extractor(x)
                return tuple(out[n] for n in self.names)

        return FxLayers().eval()

    class HookLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.names = list(layers)
            self._captured = {}
            for name in self.names:
                modules[name].register_forward_hook(self._hook(name))

        def _hook(self, name):
            def hook(_module, _inputs, output):
                self._captured[name] = output

            return hook

        def forward(self, x):
            self._captured.clear()
            self.model(x)
            return tuple(self._captured[n] for n in self.names)

    return HookLayers().eval()


def layer_kind(name, output):
    """The manifest kind of a layer from its output: conv (4-D), classifier (the final fc) or linear (2-D)."""
    if output.dim() == 4:
        return "conv"
    if output.dim() == 2:
        return "classifier" if name == CLASSIFIER_MODULE else "linear"
    fail(f"layer {name} returns a {output.dim()}-D tensor {tuple(output.shape)}; only N x C x H x W and N x C outputs can be dissected")


def format_manifest(manifest):
    """JSON that stays readable by hand: one layer and one class name per line, short lists inline."""
    out = []
    for key, value in manifest.items():
        if key in ("layers", "class_names") and value:
            items = ",\n".join("    " + json.dumps(v) for v in value)
            out.append(f"  {json.dumps(key)}: [\n{items}\n  ]")
        else:
            out.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(out) + "\n}\n"


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
        import torchvision
    except ImportError as e:
        fail(f"{e}; this script needs PyTorch and torchvision (pip install torch torchvision)")

    layers = [n.strip() for n in args.layers.split(",") if n.strip()]
    if not layers:
        fail("--layers is empty")
    if len(set(layers)) != len(layers):
        fail("--layers names a layer twice")
    if args.out.suffix == ".json":
        fail("--out is the TorchScript file (e.g. model.pt); the manifest is written beside it")

    model, weights, weights_desc = build_model(args)
    class_names = read_class_names(args, weights)
    wrapper = make_wrapper(model, layers, args.method)

    size = args.input_size
    resize = args.resize if args.resize is not None else round(size / 0.875)
    example = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        eager = wrapper(example)
        kinds = [layer_kind(n, t) for n, t in zip(layers, eager)]
        # Tracing records the tensor operations of one call; ResNets have no data-dependent
        # control flow, so the trace is exact and keeps working for other batch and image sizes.
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    traced = traced.eval()

    if class_names is not None:
        if CLASSIFIER_MODULE in layers:
            width = eager[layers.index(CLASSIFIER_MODULE)].shape[1]
        else:
            width = model.fc.out_features
        if len(class_names) != width:
            fail(f"{len(class_names)} class names for a classifier with {width} outputs")
        if "classifier" not in kinds:
            # DnD Studio attaches class names to the classifier layer; without one they are unused.
            print(f"note: '{CLASSIFIER_MODULE}' is not among --layers; class names are left out", file=sys.stderr)
            class_names = None

    args.out.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(args.out))

    # Check the saved file, as DnD Studio will use it: reload it, run a random batch of another
    # size, compare with the eager model.
    reloaded = torch.jit.load(str(args.out), map_location="cpu").eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = wrapper(x)
        got = reloaded(x)
    if not isinstance(got, tuple) or len(got) != len(layers):
        fail("the saved module does not return one tensor per layer (tracing problem)")
    for name, a, b in zip(layers, want, got):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-4):
            fail(f"the saved module's output for {name} differs from the eager model")

    if args.places365:
        domain = "places365"
    elif weights is not None or args.classes == "imagenet":
        domain = "imagenet"
    else:
        domain = "custom"
    manifest = {
        "name": args.name or f"{args.arch}-{domain}",
        "layers": [{"name": n, "kind": k} for n, k in zip(layers, kinds)],
        "input_size": [size, size],
        "resize_shorter": resize,
        # Same normalisation for torchvision's ImageNet models and CSAIL's Places365 models.
        "mean": [round(m * 255, 4) for m in IMAGENET_MEAN],
        "std": [round(s * 255, 4) for s in IMAGENET_STD],
        "description": f"torchvision {args.arch}, weights {weights_desc}",
        "source": {
            "exported_by": "tools/export_torchscript.py",
            "arch": args.arch,
            "weights": weights_desc,
            "method": args.method,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
    }
    if class_names is not None:
        manifest["class_names"] = class_names
    manifest_path = args.out.with_suffix(".json")
    manifest_path.write_text(format_manifest(manifest), encoding="utf-8")

    print(f"wrote {args.out} and {manifest_path}")
    for name, kind, t in zip(layers, kinds, eager):
        print(f"  {name:<12} {kind:<10} {' x '.join(str(d) for d in t.shape[1:])}")


if __name__ == "__main__":
    main()
