#!/usr/bin/env bash
# Check pyproject.toml's lower bounds: run the test suite with the oldest versions it
# declares for the commonly shared packages (numpy, scipy, pandas, scikit-learn, pyarrow,
# matplotlib, pydantic, rich, typer, optuna, joblib, PyYAML, timm, umap-learn, pytest).
# A venv layered over the project's .venv (`make install` first): the old versions,
# installed into it, shadow .venv's; everything else (torch 2.14.1 ...) comes from .venv.
# Usage: bash bench/lower_bounds.sh [pytest args]; results go into BENCHMARKS.md, "Packaging".
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${LOWER_BOUNDS_VENV:-bench/out/lower-bounds-venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv "$venv"
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  base=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "import site; site.addsitedir('$base')" > "$site/zz_moakit_base_venv.pth"
  "$venv/bin/python" -m pip install --quiet --no-deps \
    numpy==2.0.2 scipy==1.13.1 pandas==2.2.3 pytz==2024.2 scikit-learn==1.5.2 pyarrow==17.0.0 \
    matplotlib==3.9.4 pydantic==2.7.4 pydantic-core==2.18.4 rich==13.9.4 typer==0.15.1 click==8.1.8 \
    optuna==4.9.0 joblib==1.4.2 PyYAML==6.0.1 timm==1.0.11 umap-learn==0.5.7 pytest==8.3.5
fi
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
names = ["numpy", "scipy", "pandas", "scikit-learn", "pyarrow", "matplotlib", "pydantic", "rich", "typer",
         "click", "optuna", "joblib", "PyYAML", "timm", "umap-learn", "torch", "pytest"]
print("lower-bounds env:", ", ".join(f"{n} {version(n)}" for n in names))
PY
MPLBACKEND=Agg "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
