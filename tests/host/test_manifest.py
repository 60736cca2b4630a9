"""firmware/manifest.py, the freeze manifest of a board without PSRAM (docs/hardware.md): it keeps the port's own
frozen modules (the ESP32's _boot.py mounts the file system) and freezes the `meter` package, never `sim`."""

from meterkit.device.toolchain import firmware_dir


def _calls():
    calls = []
    api = {"include": lambda path: calls.append(("include", path)),
           "package": lambda name, *a, **kw: calls.append(("package", name)),
           "module": lambda name, *a, **kw: calls.append(("module", name)),
           "freeze": lambda path, *a, **kw: calls.append(("freeze", path)),
           "require": lambda name, *a, **kw: calls.append(("require", name))}
    path = firmware_dir() / "manifest.py"
    exec(compile(path.read_text(), str(path), "exec"), api)  # noqa: S102 - our own manifest, MicroPython's API
    return calls


def test_the_manifest_freezes_meter_and_keeps_the_ports_modules():
    calls = _calls()
    assert ("include", "$(PORT_DIR)/boards/manifest.py") in calls
    assert ("package", "meter") in calls
    assert (firmware_dir() / "meter" / "__init__.py").exists()  # package() freezes firmware/meter/**/*.py


def test_the_manifest_never_freezes_the_simulator():
    assert not [c for c in _calls() if "sim" in c[1].replace("\\", "/").split("/")]
