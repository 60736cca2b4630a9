"""Every firmware file compiles with mpy-cross for the ESP32 (xtensawin): viper mistakes fail here, not on a board."""

import subprocess

import pytest

from meterkit.device.toolchain import firmware_dir, mpy_cross_bin

FILES = sorted(p for p in firmware_dir().rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(firmware_dir())))
def test_compiles_for_esp32(path, tmp_path):
    out = tmp_path / (path.stem + ".mpy")
    proc = subprocess.run([mpy_cross_bin(), "-march=xtensawin", "-o", str(out), str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_there_is_firmware_to_compile():
    assert any(p.parent.name == "meter" for p in FILES)
