"""Arming commands: crashkernel, load, unload, status, check, panic-policy, test.

Each command takes a hidden `--root DIR` (or $KDUMPY_ROOT): every OS path is read under it, so the
commands run against a directory tree in tests. The jobs live in kdumpy.arm and kdumpy.service.config
and are imported inside the functions that use them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdumpy.errors import KdumpyError, UsageError

if TYPE_CHECKING:
    from kdumpy.arm.crashkernel import Evaluation, KernelModel
    from kdumpy.arm.kexec_load import LoadPlan
    from kdumpy.arm.root import Root
    from kdumpy.service.config import Config

__all__ = ["register"]


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None, help=argparse.SUPPRESS)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "crashkernel",
        help="evaluate crashkernel= exactly as the kernel does; recommend or set one",
        description="Evaluate a crashkernel= value (or a whole command line, or by default the running "
        "kernel's) for an amount of System RAM, with the rules of the running kernel's version.",
    )
    p.add_argument("expr", nargs="*", metavar="EXPR", help="crashkernel values, e.g. 512M-2G:64M,2G-:128M")
    p.add_argument("--cmdline", metavar="STRING", help="evaluate a whole kernel command line")
    p.add_argument(
        "--ram", metavar="SIZE", help="System RAM as the kernel counts it (default: this machine's)"
    )
    p.add_argument(
        "--kernel-version", metavar="X.Y", help="model this kernel version (default: the running one)"
    )
    p.add_argument(
        "--recommend", action="store_true", help="propose a value for kdumpy's capture environment"
    )
    p.add_argument("--set", metavar="EXPR", dest="set_expr", help="write EXPR to the bootloader drop-in")
    p.add_argument(
        "--force", action="store_true", help="with --set: write a value that reserves nothing here"
    )
    p.add_argument("--json", action="store_true", help="print a JSON object")
    _root_arg(p)
    p.set_defaults(func=_crashkernel)

    p = sub.add_parser(
        "load",
        help="load the capture kernel (kexec_file_load; kexec_load with --elf32-core-headers)",
        description="Load the capture kernel into the crashkernel reservation with kexec_file_load(2), "
        "or with --elf32-core-headers kexec_load(2), kdumpy laying out every segment. "
        "Defaults: the running kernel's vmlinuz and initrd, its command line without crashkernel= and "
        "the options that must not reach the capture kernel, plus nr_cpus=1 irqpoll reset_devices ...; "
        "[capture] in /etc/kdumpy/kdumpy.toml and these options override them.",
    )
    p.add_argument("--kernel", metavar="PATH")
    p.add_argument("--initrd", metavar="PATH")
    p.add_argument("--no-initrd", action="store_true", help="load no initrd (KEXEC_FILE_NO_INITRAMFS)")
    p.add_argument("--append", metavar="ARGS", action="append", default=[], help="words added last")
    p.add_argument("--command-line", metavar="CMDLINE", help="use CMDLINE instead of /proc/cmdline")
    p.add_argument(
        "--elf32-core-headers",
        action="store_true",
        help="load with kexec_load(2) and ELF32 core headers: /proc/vmcore becomes ELFCLASS32 "
        "(x86_64, RAM below 4 GiB; refused under lockdown)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be loaded, load nothing")
    p.add_argument("--json", action="store_true")
    _root_arg(p)
    p.set_defaults(func=_load)

    p = sub.add_parser("unload", help="unload the capture kernel")
    _root_arg(p)
    p.set_defaults(func=_unload)

    p = sub.add_parser(
        "status",
        help="is kdump armed? (exit 0 armed, 3 not loaded, 4 no reservation)",
        description="Whether memory is reserved and a capture kernel loaded. Exit status: 0 armed, "
        "3 reserved but nothing loaded, 4 no crashkernel reservation.",
    )
    p.add_argument("--json", action="store_true")
    _root_arg(p)
    p.set_defaults(func=_status)

    p = sub.add_parser(
        "check",
        help="preflight: kernel options, reservation, capture kernel, target, lockdown",
        description="Check the kdump prerequisites; each check passes, warns or fails with its fix. "
        "Exit status 1 when a check fails.",
    )
    p.add_argument("--target", default="/var/crash", help="dump directory to check (default /var/crash)")
    p.add_argument("--config", metavar="FILE", help="kernel config file (default /boot/config-$(uname -r))")
    p.add_argument("--kernel", metavar="PATH", help="capture kernel to check (default as for load)")
    p.add_argument("--initrd", metavar="PATH", help="capture initrd to check (default as for load)")
    p.add_argument("--json", action="store_true")
    _root_arg(p)
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "panic-policy",
        help="which faults panic (and so dump): show or set",
        description="Show or set the panic policy: panic_on_oops, panic_on_warn, softlockup_panic, "
        "hardlockup_panic, hung_task_panic, unknown_nmi_panic, panic_on_oom, panic (sysctls: applied now "
        "and persisted), panic_on_taint (a boot parameter: next boot). Settings are kept in "
        "/etc/kdumpy/kdumpy.toml [panic].",
    )
    p.add_argument("--show", action="store_true", help="show current and configured values (default)")
    p.add_argument("--set", metavar="KEY=VALUE", nargs="+", dest="set_items", default=[])
    p.add_argument("--unset", metavar="KEY", nargs="+", default=[])
    p.add_argument("--apply", action="store_true", help="apply the settings file's [panic] now")
    p.add_argument("--json", action="store_true")
    _root_arg(p)
    p.set_defaults(func=_panic_policy)

    p = sub.add_parser("test", help="crash the machine now (sysrq-c) to test the dump")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _root_arg(p)
    p.set_defaults(func=_test)


# --- helpers ------------------------------------------------------------------------------------


def _root(args: argparse.Namespace) -> Root:
    from kdumpy.arm.root import Root

    return Root.from_arg(args.root)


def _config(root: Root) -> Config:
    from kdumpy.service import config

    return config.load(root.path(config.CONFIG_PATH))


def _dump_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _model(root: Root, version: str | None) -> KernelModel:
    from kdumpy.arm import crashkernel as ck

    release = version or root.release()
    if not release:
        raise UsageError("cannot tell the kernel version: give --kernel-version X.Y")
    return ck.model_for(release, root.machine())


# --- crashkernel --------------------------------------------------------------------------------


def _print_eval(ev: Evaluation) -> None:
    from kdumpy.arm.crashkernel import fmt_size

    head = f"crashkernel={ev.value}" if ev.value else "(no crashkernel=)"
    if ev.size:
        where = f" at {fmt_size(ev.offset)}" if ev.offset else ""
        low = f", plus {fmt_size(ev.low_size)} below 4G" if ev.low_size else ""
        print(f"{head}: reserves {fmt_size(ev.size)}{where}{low}")
    else:
        print(f"{head}: reserves nothing")
    if ev.matched is not None:
        print(f"  matched range: {ev.matched.text()}")
    print(f"  RAM: {ev.ram} bytes ({ev.ram / (1 << 20):.1f} MiB); rules of kernel {ev.model.name()}")
    for r in ev.reasons:
        print(f"  - {r}")


def _crashkernel(args: argparse.Namespace) -> int:
    from kdumpy.arm import bootloader
    from kdumpy.arm import crashkernel as ck

    root = _root(args)
    model = _model(root, args.kernel_version)
    if args.ram:
        ram = ck.parse_size(args.ram, "--ram")
        above: int | None = None
        source = "--ram"
    else:
        ram, above, source = ck.system_ram(root)
    if args.set_expr is not None:
        value = args.set_expr.removeprefix(ck.NAME)
        ev = ck.evaluate(ck.NAME + value, ram, model, ram_above_4g=above)
        if ev.syntax not in ("range", "simple") or (ev.size == 0 and not args.force):
            why = "; ".join(ev.reasons)
            raise UsageError(
                f"crashkernel={value} would reserve nothing here ({why}); --force writes it anyway"
            )
        path = bootloader.write(root, crashkernel=value)
        others = bootloader.others(root)
        if args.json:
            _dump_json(
                {"written": str(path), "apply": bootloader.apply_command(root), "evaluation": ev.as_dict()}
            )
            return 0
        print(f"wrote crashkernel={value} to {path} ({ck.fmt_size(ev.size)} with this RAM)")
        for f, v in others:
            print(f"  note: {f} also sets crashkernel={v}; the kernel uses the last one, kdumpy's")
        print(f"apply it with: {bootloader.apply_command(root)}   (takes effect at the next boot)")
        return 0
    if args.recommend:
        value, ev = ck.recommend(ram, model)
        if args.json:
            out = ev.as_dict()
            out["recommended"] = value
            _dump_json(out)
            return 0
        print(f"recommended: crashkernel={value}")
        _print_eval(ev)
        print(f"set it with: kdumpy crashkernel --set {value}")
        return 0
    current = None
    if args.cmdline is not None:
        cmdline = args.cmdline
    elif args.expr:
        cmdline = " ".join(e if e.startswith(ck.NAME) else ck.NAME + e for e in args.expr)
    else:
        cmdline = (root.read("/proc/cmdline") or "").strip()
        current = ck.reservation(root)
    ev = ck.evaluate(cmdline, ram, model, ram_above_4g=above)
    if args.json:
        out = ev.as_dict()
        out["ram_source"] = source
        if current is not None:
            out["current"] = current.as_dict()
        _dump_json(out)
        return 0
    _print_eval(ev)
    print(f"  (RAM from {source})")
    if current is not None:
        regions = ", ".join(f"{s:#x}-{e:#x}" for s, e in current.regions)
        print(f"reserved now: {ck.fmt_size(current.size)}" + (f" ({regions})" if regions else ""))
    return 0


# --- load / unload / status ---------------------------------------------------------------------


def _capture_files(
    args: argparse.Namespace, root: Root, cfg: Config, release: str
) -> tuple[Path, Path | None]:
    """The capture kernel and initrd: the command line's, else [capture] in the config, else the
    running kernel's. An empty initrd in the config, or --no-initrd, means none."""
    from kdumpy.arm import kexec

    dk, di = kexec.default_paths(root, release)
    kernel = Path(args.kernel or cfg.capture.kernel or dk)
    if getattr(args, "no_initrd", False):
        return kernel, None
    if args.initrd:
        return kernel, Path(args.initrd)
    if cfg.capture.initrd is not None:
        return kernel, Path(cfg.capture.initrd) if cfg.capture.initrd else None
    return kernel, di


def _load(args: argparse.Namespace) -> int:
    from kdumpy.arm import crashkernel as ck
    from kdumpy.arm import kexec

    root = _root(args)
    cfg = _config(root)
    release = root.release()
    kernel, initrd = _capture_files(args, root, cfg, release)
    running = (root.read("/proc/cmdline") or "").strip()
    cmdline = kexec.capture_cmdline(
        running,
        arch=root.machine(),
        nr_cpus=cfg.capture.nr_cpus,
        remove=cfg.capture.remove,
        append=[*cfg.capture.append, *args.append],
        base=args.command_line,
    )
    if args.dry_run:
        plan: dict[str, Any] = {
            "kernel": str(kernel),
            "initrd": str(initrd) if initrd else None,
            "cmdline": cmdline,
            "loader": "kexec_file_load",
        }
        layout = None
        if args.elf32_core_headers:
            from kdumpy.arm import kexec_load

            layout = kexec_load.build_plan(root, kernel, initrd, cmdline, elf_class=32)
            plan.update(cmdline=layout.cmdline, loader="kexec_load", elf_class=32)
            refused = kexec_load.refusal(root)
            if refused:
                plan["refused"] = refused
            plan["layout"] = layout.as_dict()
        if args.json:
            _dump_json(plan)
        else:
            for k, v in plan.items():
                if k != "layout":
                    print(f"{k}: {v}")
            if layout is not None:
                _print_layout(layout)
        return 0
    res = ck.reservation(root)
    if res.size == 0:
        try:
            ram, above, _ = ck.system_ram(root)
            ev = ck.evaluate(running, ram, ck.model_for(release, root.machine()), ram_above_4g=above)
            why = "; ".join(ev.reasons)
        except KdumpyError:
            why = "unknown"
        raise kexec.KexecError(
            f"no crashkernel reservation (/sys/kernel/kexec_crash_size is 0: {why}); set one with "
            "`kdumpy crashkernel --set ...`, update the bootloader and reboot"
        )
    if args.elf32_core_headers:
        from kdumpy.arm import kexec_load

        result = kexec_load.load_elf32(root, kernel, initrd, cmdline)
        how = {"loader": "kexec_load", "elf_class": 32}
    else:
        result = kexec.load(root, kernel, initrd, cmdline)
        how = {"loader": "kexec_file_load"}
    if args.json:
        _dump_json({**result.as_dict(), **how})
    else:
        rel = f" ({result.release})" if result.release else ""
        via = " with kexec_load, ELF32 core headers," if args.elf32_core_headers else ""
        print(f"loaded {kernel}{rel}{via} into {ck.fmt_size(result.reserved)} reserved")
        print(f"  initrd: {initrd or '(none)'}")
        # With kexec_load the command line carries the elfcorehdr= kdumpy placed.
        print(f"  command line: {result.cmdline}")
        if args.elf32_core_headers and root.exists("/sys/firmware/efi"):
            print(
                "  note: booted through EFI; kexec_load passes the capture kernel no EFI tables or EFI "
                "memory map, so it runs without EFI runtime services (docs/kexec-load.md)"
            )
    return 0


def _print_layout(layout: LoadPlan) -> None:
    """The segments kexec_load would get."""
    from kdumpy.arm.crashkernel import fmt_size

    print(f"crash region: {layout.crash.start:#x}-{layout.crash.end - 1:#x}")
    print(f"entry: {layout.entry:#x} (purgatory), kernel entry {layout.kernel_entry:#x}")
    for seg in layout.segments:
        print(f"  {seg.what:12} {seg.mem:#012x}  {fmt_size(seg.memsz):>8}  ({len(seg.data)} bytes of data)")
    print(f"  ELF{layout.elf_class} core header: {len(layout.notes)} notes, {len(layout.ram)} RAM loads")


def _unload(args: argparse.Namespace) -> int:
    from kdumpy.arm import kexec

    root = _root(args)
    kexec.unload(root)
    print("capture kernel unloaded")
    return 0


def _status(args: argparse.Namespace) -> int:
    from kdumpy.arm import crashkernel as ck
    from kdumpy.arm.status import status

    root = _root(args)
    st = status(root)
    if args.json:
        _dump_json(st.as_dict())
        return st.code
    res = st.reservation
    print(f"kdump: {st.state}")
    print(f"  running kernel: {st.release}")
    print(f"  crashkernel: {' '.join(st.crashkernel) or '(none on the command line)'}")
    regions = ", ".join(f"{s:#x}-{e:#x}" for s, e in res.regions)
    print(f"  reserved: {ck.fmt_size(res.size)}" + (f" ({regions})" if regions else ""))
    if st.armed:
        if st.loaded:
            rel = st.loaded.get("release") or "?"
            print(f"  loaded: {st.loaded.get('kernel')} ({rel}), initrd {st.loaded.get('initrd')}")
            if st.loaded.get("loader") == "kexec_load":
                n = st.loaded.get("elf_class") or "?"
                print(f"  loader: kexec_load, ELF{n} core headers (/proc/vmcore will be ELFCLASS{n})")
            print(f"  command line: {st.loaded.get('cmdline')}")
        else:
            print("  loaded: a capture kernel (not by kdumpy: which one is unknown)")
        if st.stale:
            print("  note: the loaded kernel or initrd changed on disk since; run `kdumpy load` again")
    elif st.code == 3:
        print("  fix: kdumpy load")
    else:
        print("  fix: kdumpy crashkernel --recommend; kdumpy crashkernel --set ...; reboot")
    return st.code


# --- check ----------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    from kdumpy.arm import checks

    root = _root(args)
    cfg = _config(root)
    release = root.release()
    kernel, initrd = _capture_files(args, root, cfg, release)
    results = checks.run(
        root, release=release, kernel=kernel, initrd=initrd, target=args.target, config=args.config
    )
    failed = any(c.status == "fail" for c in results)
    if args.json:
        _dump_json({"release": release, "ok": not failed, "checks": [c.as_dict() for c in results]})
        return 1 if failed else 0
    print(f"kdump prerequisites on {release}:")
    for c in results:
        print(f"  {c.status.upper():4}  {c.name}: {c.detail}")
        if c.fix and c.status != "pass":
            print(f"        fix: {c.fix}")
    counts = {s: sum(c.status == s for c in results) for s in ("pass", "warn", "fail")}
    print(f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed")
    return 1 if failed else 0


# --- panic-policy ---------------------------------------------------------------------------------


def _panic_policy(args: argparse.Namespace) -> int:
    from kdumpy.arm import bootloader, panic
    from kdumpy.service import config as config_mod

    root = _root(args)
    cfg = _config(root)
    changed = False
    for item in args.set_items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_").removeprefix("kernel.").removeprefix("vm.")
        if not sep:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        if key in panic.SYSCTLS:
            lo, hi = config_mod.PANIC_KEYS[key]
            try:
                n = int(value, 0)
            except ValueError as e:
                raise UsageError(f"--set {key}={value}: not an integer") from e
            if not lo <= n <= hi:
                raise UsageError(f"--set {key}={value}: must be from {lo} to {hi}")
            cfg.panic.sysctls[key] = n
        elif key == "panic_on_taint":
            spec = value.removesuffix(",nousertaint")
            panic.taint_mask(spec)  # validate
            cfg.panic.panic_on_taint = spec
            cfg.panic.panic_on_taint_nousertaint = spec != value
        elif key == "panic_on_taint_nousertaint":
            cfg.panic.panic_on_taint_nousertaint = value.lower() in ("1", "true", "yes", "on")
        else:
            raise UsageError(
                f"--set {key}: not a panic setting ({', '.join([*panic.SYSCTLS, 'panic_on_taint'])})"
            )
        changed = True
    for key in args.unset:
        key = key.replace("-", "_")
        if key in cfg.panic.sysctls:
            del cfg.panic.sysctls[key]
        elif key == "panic_on_taint":
            cfg.panic.panic_on_taint = None
            cfg.panic.panic_on_taint_nousertaint = False
        else:
            raise UsageError(f"--unset {key}: not set in {cfg.path}")
        changed = True
    messages: list[str] = []
    if changed:
        config_mod.save(cfg)
        messages.append(f"saved {cfg.path}")
    if changed or args.apply:
        messages += panic.apply(root, cfg.panic.sysctls)
        persisted = panic.persist(root, cfg.panic.sysctls)
        if persisted:
            messages.append(f"applied now and persisted in {persisted}")
        taint = None
        if cfg.panic.panic_on_taint:
            taint = panic.taint_param(
                panic.taint_mask(cfg.panic.panic_on_taint), cfg.panic.panic_on_taint_nousertaint
            )
        if bootloader.read(root).params.get("panic_on_taint") != taint:
            path = bootloader.write(root, panic_on_taint=taint)
            messages.append(
                f"panic_on_taint={taint} written to {path}: takes effect at the next boot after "
                f"{bootloader.apply_command(root)}"
                if taint
                else f"panic_on_taint removed from {bootloader.DROPIN}: next boot, after "
                f"{bootloader.apply_command(root)}"
            )
    settings = panic.show(root, cfg.panic.sysctls)
    running = (root.read("/proc/cmdline") or "").split()
    booted_taint = next(
        (w.split("=", 1)[1] for w in reversed(running) if w.startswith("panic_on_taint=")), None
    )
    if args.json:
        _dump_json(
            {
                "sysctls": [s.as_dict() for s in settings],
                "panic_on_taint": {
                    "configured": cfg.panic.panic_on_taint,
                    "nousertaint": cfg.panic.panic_on_taint_nousertaint,
                    "booted": booted_taint,
                },
                "messages": messages,
            }
        )
        return 0
    for m in messages:
        print(m)
    print(f"{'setting':22} {'now':>6} {'configured':>10}")
    for s in settings:
        now = "-" if s.current is None else str(s.current)
        conf = "" if s.configured is None else str(s.configured)
        print(f"{s.sysctl:22} {now:>6} {conf:>10}")
    conf_taint = cfg.panic.panic_on_taint or ""
    if conf_taint:
        mask = panic.taint_mask(conf_taint)
        conf_taint = f"{conf_taint} = {', '.join(panic.taint_names(mask))}"
    print(f"{'panic_on_taint (boot)':22} {booted_taint or '-':>6} {conf_taint:>10}")
    return 0


# --- test -----------------------------------------------------------------------------------------


def _test(args: argparse.Namespace) -> int:
    import os

    from kdumpy.arm.status import status

    root = _root(args)
    st = status(root)
    if not st.armed:
        raise KdumpyError(
            f"refusing to crash: nothing is armed ({st.state}); a crash now would reboot without a dump"
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to crash without confirmation: give --yes")
        answer = input("This crashes the machine NOW (sysrq-c) to test kdump. Type 'crash' to go on: ")
        if answer.strip() != "crash":
            print("not crashing")
            return 1
    print("crashing through /proc/sysrq-trigger ...", flush=True)
    if root.is_live:
        os.sync()
    root.write("/proc/sysrq-trigger", "c")
    return 0
