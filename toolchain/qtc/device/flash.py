"""``qtc flash``: put the bench firmware on a board.

* A real ESP32-family board: esptool's Python API (``esptool.cmds``, esptool ≥ 5):
  ``detect_chip`` → ``run_stub`` → ``attach_flash`` → ``write_flash`` of one merged
  image built from the IDF (or PlatformIO) build → ``reset_chip``.
* The emulated board (``--port qemu``): boot the ELF in QEMU in the background
  and report the ``socket://`` port it serves its UART on.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import QtcError

# second-stage bootloader offset per chip (esptool/targets/esp32*.py BOOTLOADER_FLASH_OFFSET)
BOOTLOADER_OFFSET = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0, "esp32c6": 0x0}
PARTITION_TABLE_OFFSET = 0x8000
APP_OFFSET = 0x10000
CONNECT_HINT = ("check the port and cable; if it still fails, hold BOOT, press RESET, release BOOT and rerun; "
                "close other programs using the port (idf.py monitor)")


def image_parts(build_dir: str | Path, chip: str) -> tuple[list[tuple[int, Path]], dict]:
    """(offset, file) pairs and flash settings of a finished build.

    ESP-IDF: ``build/flasher_args.json``.  PlatformIO: ``.pio/build/<env>`` with
    bootloader.bin / partitions.bin / firmware.bin at the chip's standard offsets."""
    d = Path(build_dir)
    args = d / "flasher_args.json"
    if args.exists():
        try:
            doc = json.loads(args.read_text())
            files = doc["flash_files"]
        except (ValueError, KeyError) as exc:
            raise QtcError(f"cannot read flasher_args.json ({exc})", where=str(args),
                           hint="rebuild the project: qtc build") from None
        parts = sorted((int(off, 16), d / rel) for off, rel in files.items())
        settings = {k: v for k, v in (doc.get("flash_settings") or {}).items()
                    if k in ("flash_mode", "flash_size", "flash_freq")}
    elif (d / "firmware.bin").exists():
        if chip not in BOOTLOADER_OFFSET:
            raise QtcError(f"unknown bootloader offset for chip {chip}", hint="use esp32, esp32s3 or esp32c3")
        parts = [(BOOTLOADER_OFFSET[chip], d / "bootloader.bin"), (PARTITION_TABLE_OFFSET, d / "partitions.bin"),
                 (APP_OFFSET, d / "firmware.bin")]
        settings = {}
    else:
        raise QtcError(f"{d} is not a finished ESP-IDF or PlatformIO build (no flasher_args.json or firmware.bin)",
                       where=str(d), hint="build it first: qtc build --target " + chip)
    missing = [str(p) for _, p in parts if not p.exists()]
    if missing:
        raise QtcError(f"build output missing: {', '.join(missing)}", where=str(d), hint="rebuild: qtc build")
    return parts, settings


def merged_image(build_dir: str | Path, chip: str) -> tuple[bytes, dict]:
    """One image for offset 0 (bootloader + partition table + app), like ``esptool merge-bin``."""
    merged = Path(build_dir) / "merged-binary.bin"  # idf.py merge-bin
    parts, settings = image_parts(build_dir, chip)
    if merged.exists() and merged.stat().st_mtime >= max(p.stat().st_mtime for _, p in parts):
        return merged.read_bytes(), settings
    from esptool.cmds import merge_bin
    from esptool.util import FatalError

    try:
        data = merge_bin([(off, str(p)) for off, p in parts], chip, output=None)
    except FatalError as exc:
        raise QtcError(f"cannot merge the flash image: {exc}", where=str(build_dir),
                       hint="rebuild: qtc build") from None
    return data, settings


def flash_esp(port: str, build_dir: str | Path, chip: str, *, baud: int = 460800) -> dict:
    """Write the merged image at 0x0 and hard-reset the chip."""
    image, _settings = merged_image(build_dir, chip)
    try:
        from esptool.cmds import attach_flash, detect_chip, reset_chip, run_stub, write_flash
        from esptool.util import FatalError
    except ImportError:
        raise QtcError("esptool ≥ 5 with the Python API (esptool.cmds) is not installed",
                       hint="pip install 'esptool>=5'") from None
    import serial

    try:
        with detect_chip(port, baud=115200, connect_mode="default-reset", connect_attempts=3) as esp:
            found = esp.CHIP_NAME.lower().replace("-", "")
            if found != chip:
                raise QtcError(f"the board on {port} is an {esp.CHIP_NAME}, not an {chip}", where=port,
                               hint=f"pass --target {found} (and rebuild), or plug in the {chip} board")
            esp = run_stub(esp)
            if baud != 115200:
                esp.change_baud(baud)
            attach_flash(esp)
            write_flash(esp, [(0x0, image)])
            reset_chip(esp, "hard-reset")
    except QtcError:
        raise
    except (FatalError, serial.SerialException, OSError) as exc:
        raise QtcError(f"flashing failed: {' '.join(str(exc).split())}", where=port, hint=CONNECT_HINT) from None
    return {"port": port, "chip": chip, "bytes": len(image), "build_dir": str(build_dir)}


def boot_qemu(elf: str | Path, *, log_path: str | Path | None = None):
    """Start the emulated board in the background; returns the running QemuBoard."""
    from .qemu import QemuBoard

    return QemuBoard(elf, detach=True, log_path=log_path).start()
