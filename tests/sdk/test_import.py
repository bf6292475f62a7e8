"""`import shoal` stays cheap: defining apps and calling .local() never loads the native
extension (containers do not have it) nor cloudpickle."""

import os
import subprocess
import textwrap
from pathlib import Path

PYTHON = "/usr/bin/python3"
PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"


def test_defining_an_app_and_running_functions_locally_does_not_load_native_code():
    code = textwrap.dedent(
        """
        import sys
        import shoal

        app = shoal.App("light")

        @app.function(timeout=5, retries=shoal.Retries(max_retries=2))
        def f(x):
            return x + 1

        @app.cls()
        class C:
            @shoal.method()
            def m(self):
                return 2

        @app.local_entrypoint()
        def main():
            pass

        assert f.local(1) == 2 and C().m.local() == 2
        import shoal.cli
        shoal.cli.build_parser()
        loaded = sorted(m for m in sys.modules if m.startswith(("shoal._native", "cloudpickle")))
        assert not loaded, loaded
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["PYTHONPATH"] = str(PYTHON_DIR)
    proc = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_python_dash_m_shoal_run_is_the_cli():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["PYTHONPATH"] = str(PYTHON_DIR)
    proc = subprocess.run([PYTHON, "-m", "shoal", "run", "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "FILE[::NAME]" in proc.stdout
