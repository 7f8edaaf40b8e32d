"""The one settings file, /etc/kdumpy/kdumpy.toml: read with tomllib, validated with one-line errors
that name the file and the key, and written back by a small writer for its flat schema.

    [capture]                 # what `kdumpy load` loads
    kernel = "/boot/vmlinuz-6.1.0-56-amd64"   # default: the running kernel's
    initrd = "/boot/initrd.img-6.1.0-56-amd64"
    append = "console=ttyS0"  # a string or a list of words, added last
    remove = ["console"]      # option names (or words) never passed on
    nr_cpus = 1

    [panic]                   # what `kdumpy panic-policy` applies and persists
    panic_on_oops = 1
    panic = 10
    panic_on_taint = "D,W"    # taint letters, names or a hex mask
    panic_on_taint_nousertaint = true

Sections this module does not know (a later issue adds dump targets) are kept as they are.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdumpy.errors import UsageError

__all__ = [
    "CONFIG_PATH",
    "PANIC_KEYS",
    "CaptureConfig",
    "Config",
    "ConfigError",
    "PanicConfig",
    "dumps",
    "load",
    "save",
]

CONFIG_PATH = "/etc/kdumpy/kdumpy.toml"

# [panic] keys that are sysctls, with the range of values the kernel accepts.
PANIC_KEYS: dict[str, tuple[int, int]] = {
    "panic_on_oops": (0, 1),
    "panic_on_warn": (0, 1),
    "softlockup_panic": (0, 1),
    "hardlockup_panic": (0, 1),
    "hung_task_panic": (0, 1),
    "unknown_nmi_panic": (0, 1),
    "panic_on_oom": (0, 2),
    "panic": (-(2**31), 2**31 - 1),
}


class ConfigError(UsageError):
    """The settings file is unreadable or holds a wrong value."""


@dataclass
class CaptureConfig:
    """[capture]: the capture kernel and its command line."""

    kernel: str | None = None
    """Path of the capture kernel; None: /boot/vmlinuz-$(uname -r)."""
    initrd: str | None = None
    """Path of its initrd; None: the running kernel's; "" loads none."""
    append: list[str] = field(default_factory=list)
    """Words added last to the capture command line."""
    remove: list[str] = field(default_factory=list)
    """Options (names, or name=value words) dropped from the inherited command line."""
    nr_cpus: int = 1


@dataclass
class PanicConfig:
    """[panic]: the panic policy."""

    sysctls: dict[str, int] = field(default_factory=dict)
    """Keys of PANIC_KEYS that are set."""
    panic_on_taint: str | None = None
    """Taint letters/names ("D,W") or a hex mask; a boot parameter, not a sysctl."""
    panic_on_taint_nousertaint: bool = False


@dataclass
class Config:
    path: Path
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    panic: PanicConfig = field(default_factory=PanicConfig)
    other: dict[str, Any] = field(default_factory=dict)
    """Sections and keys this module does not interpret, kept verbatim."""
    exists: bool = False


def _err(path: Path, section: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: [{section}] {key} {msg}")


def _words(path: Path, section: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [w for v in value for w in v.split()]
    raise _err(path, section, key, f"must be a string or a list of strings, not {value!r}")


def _parse_capture(path: Path, data: dict[str, Any]) -> CaptureConfig:
    cap = CaptureConfig()
    for key, value in data.items():
        if key in ("kernel", "initrd"):
            if not isinstance(value, str):
                raise _err(path, "capture", key, f"must be a path (a string), not {value!r}")
            if key == "kernel" and not value.startswith("/"):
                raise _err(path, "capture", key, f"must be an absolute path, not {value!r}")
            if key == "initrd" and value and not value.startswith("/"):
                raise _err(path, "capture", key, f'must be an absolute path or "" (no initrd), not {value!r}')
            setattr(cap, key, value)
        elif key in ("append", "remove"):
            setattr(cap, key, _words(path, "capture", key, value))
        elif key == "nr_cpus":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _err(path, "capture", key, f"must be an integer >= 1, not {value!r}")
            cap.nr_cpus = value
        else:
            raise _err(path, "capture", key, "is not a setting (kernel, initrd, append, remove, nr_cpus)")
    return cap


def _parse_panic(path: Path, data: dict[str, Any]) -> PanicConfig:
    pan = PanicConfig()
    for key, value in data.items():
        if key in PANIC_KEYS:
            lo, hi = PANIC_KEYS[key]
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, int) or not lo <= value <= hi:
                span = f"{lo} or {hi}" if hi - lo == 1 else f"from {lo} to {hi}"
                raise _err(path, "panic", key, f"must be an integer {span}, not {value!r}")
            pan.sysctls[key] = value
        elif key == "panic_on_taint":
            if not isinstance(value, str):
                raise _err(
                    path,
                    "panic",
                    key,
                    f'must be a string of taint flags ("D,W") or a hex mask, not {value!r}',
                )
            pan.panic_on_taint = value
        elif key == "panic_on_taint_nousertaint":
            if not isinstance(value, bool):
                raise _err(path, "panic", key, f"must be true or false, not {value!r}")
            pan.panic_on_taint_nousertaint = value
        else:
            names = ", ".join([*PANIC_KEYS, "panic_on_taint", "panic_on_taint_nousertaint"])
            raise _err(path, "panic", key, f"is not a setting ({names})")
    return pan


def load(path: Path) -> Config:
    """The settings in `path` (a host path: the caller puts it under its root); defaults when the
    file does not exist."""
    cfg = Config(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return cfg
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    cfg.exists = True
    for section, value in data.items():
        if section in ("capture", "panic"):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            if section == "capture":
                cfg.capture = _parse_capture(path, value)
            else:
                cfg.panic = _parse_panic(path, value)
        else:
            cfg.other[section] = value
    return cfg


# --- writing ----------------------------------------------------------------------------------


def _toml_str(s: str) -> str:
    out = ['"']
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _toml_key(k: str) -> str:
    if k and all(c.isalnum() or c in "_-" for c in k):
        return k
    return _toml_str(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _table(name: str, values: dict[str, Any]) -> str:
    lines = [f"[{_toml_key(name)}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def dumps(cfg: Config) -> str:
    """The TOML text of `cfg` (known sections first, then the others as they were read)."""
    cap: dict[str, Any] = {}
    if cfg.capture.kernel is not None:
        cap["kernel"] = cfg.capture.kernel
    if cfg.capture.initrd is not None:
        cap["initrd"] = cfg.capture.initrd
    if cfg.capture.append:
        cap["append"] = " ".join(cfg.capture.append)
    if cfg.capture.remove:
        cap["remove"] = list(cfg.capture.remove)
    cap["nr_cpus"] = cfg.capture.nr_cpus
    pan: dict[str, Any] = {k: cfg.panic.sysctls[k] for k in PANIC_KEYS if k in cfg.panic.sysctls}
    if cfg.panic.panic_on_taint is not None:
        pan["panic_on_taint"] = cfg.panic.panic_on_taint
        pan["panic_on_taint_nousertaint"] = cfg.panic.panic_on_taint_nousertaint
    parts = [
        "# kdumpy settings (kdumpy load, kdumpy panic-policy); commands that change one rewrite this file.\n"
    ]
    parts.append(_table("capture", cap))
    parts.append(_table("panic", pan))
    for name, value in cfg.other.items():
        if isinstance(value, dict) and all(not isinstance(v, dict) for v in value.values()):
            parts.append(_table(name, value))
        elif isinstance(value, dict):
            parts.append(f"{_toml_key(name)} = {_toml_value(value)}\n")
        else:
            parts.insert(1, f"{_toml_key(name)} = {_toml_value(value)}\n")
    return "\n".join(parts)


def save(cfg: Config) -> Path:
    """Write `cfg` to its path (atomically: a temporary file, then rename)."""
    text = dumps(cfg)
    tomllib.loads(text)  # never write what cannot be read back
    cfg.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.path.with_name(f".{cfg.path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(cfg.path)
    cfg.exists = True
    return cfg.path
