"""torchvision-style image transforms that run in ferry's C++ engine.

    from ferry import transforms as T
    loader = ferry.Loader("train.ferry", batch_size=256, transforms={
        "image": [T.Decode(), T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                  T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD), T.ToCHW()],
        "label": [T.ToDtype(torch.int64)]})

Each class validates its arguments like torchvision and serializes to the engine's ops
(docs/transforms.md has the table and the differences). Pixels stay uint8 HWC (channels last)
until ToDtype/Normalize; ToCHW moves channels first. Normalize, like torchvision's, expects
values in [0, 1]: directly after uint8 pixels it scales by 1/255 itself (ToDtype(float32,
scale=True) + Normalize fuse into that one op).
"""
import numbers

__all__ = ["Transform", "Compose", "Decode", "RandomResizedCrop", "Resize", "CenterCrop",
           "RandomHorizontalFlip", "ColorJitter", "Normalize", "ToDtype", "ToCHW",
           "to_pipeline", "from_torchvision"]

_FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
_INT_DTYPES = ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")


def _dtype_name(dtype):
    """'float32' for torch.float32, numpy.float32, 'float32' or 'f32'."""
    name = str(dtype).replace("torch.", "")
    if hasattr(dtype, "name") and not isinstance(dtype, str):  # numpy dtype / type
        name = dtype.name
    elif isinstance(dtype, type) and hasattr(dtype, "__name__"):
        name = dtype.__name__
    aliases = {"half": "float16", "float": "float32", "double": "float64", "long": "int64",
               "int": "int32", "f32": "float32", "f16": "float16", "bf16": "bfloat16",
               "u8": "uint8", "i64": "int64", "i32": "int32"}
    name = aliases.get(name, name)
    if name not in _FLOAT_DTYPES + _INT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported (float32, float16, bfloat16, float64 or an "
                         "integer type)")
    return name


def _size(name, size):
    """int (shorter side / square) or (h, w), as torchvision accepts."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError(f"{name} must be positive, got {size}")
        return int(size)
    if isinstance(size, (list, tuple)) and len(size) == 1:
        return _size(name, size[0])
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(s, numbers.Integral) and s > 0 for s in size):
        return [int(size[0]), int(size[1])]
    raise ValueError(f"{name} must be a positive int or a sequence (h, w) of positive ints, got {size!r}")


def _pair(name, value, minimum=None):
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and
            all(isinstance(v, numbers.Real) for v in value)):
        raise ValueError(f"{name} must be a sequence of two numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if lo > hi:
        raise ValueError(f"{name} should be of kind (min, max), got {value!r}")
    if minimum is not None and lo < minimum:
        raise ValueError(f"{name} values must be >= {minimum}, got {value!r}")
    return [lo, hi]


class Transform:
    """Base class: `ops()` gives the engine ops (see to_pipeline for the fusion of ToDtype+Normalize)."""

    def ops(self):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    def __init__(self, transforms):
        if not isinstance(transforms, (list, tuple)):
            raise TypeError("transforms must be a list of ferry.transforms objects")
        self.transforms = list(transforms)

    def __iter__(self):
        return iter(self.transforms)


class Decode(Transform):
    """JPEG/PNG bytes -> uint8 HWC pixels. mode: 'rgb', 'gray' or 'unchanged'."""

    def __init__(self, mode="rgb", max_pixels=None, scaled=True, device=None):
        if mode not in ("rgb", "gray", "unchanged"):
            raise ValueError(f"mode must be 'rgb', 'gray' or 'unchanged', got {mode!r}")
        if device not in (None, "cpu"):
            raise ValueError(f"device {device!r}: only CPU decode is available (device=None or 'cpu')")
        if max_pixels is not None and not (isinstance(max_pixels, numbers.Integral) and max_pixels > 0):
            raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
        self.mode, self.max_pixels, self.scaled, self.device = mode, max_pixels, bool(scaled), device

    def ops(self):
        op = {"op": "decode", "mode": self.mode, "scaled": self.scaled}
        if self.max_pixels is not None:
            op["max_pixels"] = int(self.max_pixels)
        return [op]


class RandomResizedCrop(Transform):
    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), antialias=True,
                 interpolation=None):
        self.size = _size("size", size)
        if isinstance(self.size, int):
            self.size = [self.size, self.size]  # torchvision: an int crops a square
        self.scale = _pair("scale", scale, minimum=0.0)
        self.ratio = _pair("ratio", ratio)
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio values must be positive, got {ratio!r}")
        _check_interpolation(interpolation)
        self.antialias = bool(antialias)

    def ops(self):
        return [{"op": "random_resized_crop", "size": self.size, "scale": self.scale,
                 "ratio": self.ratio, "antialias": self.antialias}]


class Resize(Transform):
    """int: the shorter side becomes `size` (aspect kept); (h, w): exactly that size."""

    def __init__(self, size, antialias=True, interpolation=None, max_size=None):
        self.size = _size("size", size)
        if max_size is not None:
            raise ValueError("max_size is not supported by ferry's resize")
        _check_interpolation(interpolation)
        self.antialias = bool(antialias)

    def ops(self):
        return [{"op": "resize", "size": self.size, "antialias": self.antialias}]


class CenterCrop(Transform):
    def __init__(self, size):
        self.size = _size("size", size)
        if isinstance(self.size, int):
            self.size = [self.size, self.size]

    def ops(self):
        return [{"op": "center_crop", "size": self.size}]


class RandomHorizontalFlip(Transform):
    def __init__(self, p=0.5):
        if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def ops(self):
        return [{"op": "random_horizontal_flip", "p": self.p}]


class ColorJitter(Transform):
    """brightness/contrast/saturation as torchvision (a number b means [max(0, 1-b), 1+b])."""

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        if hue not in (0, None, 0.0):
            raise ValueError("ColorJitter: hue is not supported by ferry (brightness, contrast and "
                             "saturation are)")
        self.brightness = _jitter("brightness", brightness)
        self.contrast = _jitter("contrast", contrast)
        self.saturation = _jitter("saturation", saturation)

    def ops(self):
        return [{"op": "color_jitter", "brightness": self.brightness, "contrast": self.contrast,
                 "saturation": self.saturation}]


def _jitter(name, value):
    if isinstance(value, numbers.Real):
        if value < 0:
            raise ValueError(f"If {name} is a single number, it must be non negative, got {value}")
        return [max(0.0, 1.0 - float(value)), 1.0 + float(value)]
    return _pair(name, value, minimum=0.0)


def _check_interpolation(interpolation):
    if interpolation is None:
        return
    name = str(getattr(interpolation, "value", interpolation)).lower()
    if name not in ("bilinear", "2"):
        raise ValueError(f"interpolation {interpolation!r}: ferry resizes bilinearly (antialiased) only")


class Normalize(Transform):
    """(x - mean) / std per channel, output `dtype`. Input in [0, 1] as torchvision expects: on
    uint8 pixels (no ToDtype(scale=True) before) it divides by 255 first."""

    def __init__(self, mean, std, dtype="float32", inplace=False):
        def seq(name, v):
            v = [v] if isinstance(v, numbers.Real) else v
            if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, numbers.Real) for x in v):
                raise ValueError(f"{name} must be a number or a sequence of numbers, got {v!r}")
            return [float(x) for x in v]
        self.mean, self.std = seq("mean", mean), seq("std", std)
        if any(s == 0 for s in self.std):
            raise ValueError(f"std evaluated to zero after conversion to float, leading to division by zero: {std!r}")
        self.dtype = _dtype_name(dtype)
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")

    def ops(self):  # to_pipeline fills in scale and axis
        return [{"op": "normalize", "mean": self.mean, "std": self.std, "dtype": self.dtype}]


class ToDtype(Transform):
    """Cast; scale=True maps uint8 [0, 255] to float [0, 1] (torchvision.transforms.v2.ToDtype)."""

    def __init__(self, dtype, scale=False):
        self.dtype = _dtype_name(dtype)
        if scale and self.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"scale=True needs a floating dtype, got {dtype!r}")
        self.scale = bool(scale)

    def ops(self):
        if self.scale:
            return [{"op": "normalize", "mean": [0.0], "std": [1.0], "scale": 1.0 / 255.0,
                     "dtype": self.dtype, "_todtype": True}]
        return [{"op": "cast", "dtype": self.dtype}]


class ToCHW(Transform):
    """HWC -> CHW (what torchvision's tensors use)."""

    def ops(self):
        return [{"op": "to_chw"}]


def _flatten(transforms):
    if isinstance(transforms, Transform) and not isinstance(transforms, Compose):
        return [transforms]
    out = []
    for t in transforms:
        if isinstance(t, Compose):
            out.extend(_flatten(t.transforms))
        elif isinstance(t, Transform):
            out.append(t)
        else:
            raise TypeError(f"{t!r} is not a ferry.transforms object (use from_torchvision for "
                            "torchvision transforms)")
    return out


def to_ops(transforms):
    """The engine ops of a list/Compose of transforms, with ToDtype(scale)+Normalize fused and
    Normalize's scale (1/255 on uint8 pixels) and channel axis (HWC: -1, after ToCHW: 0) set."""
    ops, pixels_uint8, chw = [], True, False
    for t in _flatten(transforms):
        for op in t.ops():
            op = dict(op)
            kind = op["op"]
            if kind == "to_chw":
                chw = True
            elif kind == "decode":
                pixels_uint8, chw = True, False
            elif kind == "cast":
                pixels_uint8 = op["dtype"] == "uint8"
            elif kind == "normalize":
                fused = op.pop("_todtype", False)
                op["axis"] = 0 if chw else -1
                prev = ops[-1] if ops else None
                moved_chw = None
                if (not fused and prev and prev["op"] == "to_chw" and len(ops) >= 2 and
                        ops[-2].get("_todtype")):  # ToTensor + Normalize: normalize before to_chw
                    moved_chw = ops.pop()
                    prev = ops[-1]
                    op["axis"] = prev["axis"]
                if not fused and prev and prev.get("_todtype") and prev["axis"] == op["axis"]:
                    ops.pop()  # ToDtype(scale=True) + Normalize: one pass with scale 1/255
                    op["scale"] = 1.0 / 255.0
                elif not fused:
                    op["scale"] = 1.0 / 255.0 if pixels_uint8 else 1.0
                if fused:
                    op["_todtype"] = True
                pixels_uint8 = False
                ops.append(op)
                if moved_chw is not None:
                    ops.append(moved_chw)
                continue
            ops.append(op)
    for op in ops:
        op.pop("_todtype", None)
    return ops


def to_pipeline(transforms):
    """{"field": [transforms]} -> the Loader's pipeline list."""
    if not isinstance(transforms, dict):
        raise TypeError("transforms must be a dict of field name -> list of transforms")
    return [{"field": str(field), "ops": to_ops(ts)} for field, ts in transforms.items()]


# --- torchvision conversion ------------------------------------------------------------------


def _tv_size(t):
    return list(t.size) if isinstance(t.size, (list, tuple)) else t.size


def _tv_antialias(t):
    a = getattr(t, "antialias", None)
    return True if a in (None, "warn") else bool(a)


def _convert_one(t, uint8_tensor):
    """ferry transforms for torchvision transform `t` (None: unsupported)."""
    name = type(t).__name__
    if name == "ToTensor":  # PIL uint8 HWC -> float CHW in [0, 1]
        return [ToDtype("float32", scale=True), ToCHW()]
    if name == "PILToTensor":
        return [ToCHW()]
    if name in ("ConvertImageDtype", "ToDtype"):
        dtype = getattr(t, "dtype", None)
        if isinstance(dtype, dict):
            return None
        scale = name == "ConvertImageDtype" or bool(getattr(t, "scale", False))
        return [ToDtype(dtype, scale=scale and "float" in str(dtype))]
    if name == "Normalize":
        return [Normalize(list(t.mean) if not isinstance(t.mean, numbers.Real) else t.mean,
                          list(t.std) if not isinstance(t.std, numbers.Real) else t.std)]
    if name == "RandomResizedCrop":
        return [RandomResizedCrop(_tv_size(t), scale=tuple(t.scale), ratio=tuple(t.ratio),
                                  antialias=_tv_antialias(t), interpolation=t.interpolation)]
    if name == "Resize":
        if getattr(t, "max_size", None) is not None:
            return None
        return [Resize(_tv_size(t), antialias=_tv_antialias(t), interpolation=t.interpolation)]
    if name == "CenterCrop":
        return [CenterCrop(_tv_size(t))]
    if name == "RandomHorizontalFlip":
        return [RandomHorizontalFlip(t.p)]
    if name == "ColorJitter":
        hue = t.hue
        if hue not in (None, 0) and tuple(hue) != (0, 0):
            return None
        def rng(v):
            return [1.0, 1.0] if v is None else [float(v[0]), float(v[1])]
        return [ColorJitter(rng(t.brightness), rng(t.contrast), rng(t.saturation))]
    return None


def from_torchvision(compose, decode=True):
    """Converts a torchvision (v1, or v2 where installed) Compose op by op into ferry transforms.

    The result starts with Decode() (decode=False leaves it out) and works on uint8 HWC until
    ToTensor/ToDtype; ToTensor becomes ToDtype(float32, scale=True) + ToCHW, so the output has
    torchvision's float CHW layout. Raises ValueError naming the first op it cannot convert
    and its position.
    """
    ops = list(getattr(compose, "transforms", [compose]))
    out = [Decode()] if decode else []
    for i, t in enumerate(ops):
        try:
            converted = _convert_one(t, uint8_tensor=True)
        except (ValueError, TypeError) as e:
            raise ValueError(f"from_torchvision: op {i} ({type(t).__name__}) cannot be converted: {e}") from e
        if converted is None:
            raise ValueError(f"from_torchvision: op {i} ({type(t).__name__}: {t!r}) has no ferry equivalent")
        out.extend(converted)
    return out
