#!/usr/bin/env bash
# Prints the path of a Python 3.13 interpreter for `make setup` (the project runs on 3.13: Azure's
# worker runtime, azure-functions-runtime, needs it). Looks, in order, at $PYTHON, python3.13 on PATH,
# pyenv's 3.13 versions (which may be installed but not on PATH: pyenv's shim refuses a version that
# is not selected), and the usual prefixes. Exits 2 with what to install when none is found.
set -u
want="3.13"
works() { [ -n "$1" ] && [ -x "$1" ] && "$1" -c "import sys; sys.exit(sys.version_info[:2] != (3, 13))" 2>/dev/null; }
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$(command -v "$PYTHON" 2>/dev/null || echo "$PYTHON")")
candidates+=("$(command -v python$want 2>/dev/null)")
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E "^$want(\.[0-9]+)?$" | sort -t. -k3 -n -r); do
    candidates+=("$(pyenv root)/versions/$v/bin/python$want")
  done
fi
for d in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/$want*/bin /usr/local/bin /usr/bin /opt/python/$want*/bin; do
  candidates+=("$d/python$want")
done
for c in "${candidates[@]}"; do
  if works "$c"; then echo "$c"; exit 0; fi
done
echo "no Python $want found: install it (e.g. 'pyenv install $want' or your distribution's python$want)," \
  "or point PYTHON at it: make setup PYTHON=/path/to/python$want" >&2
exit 2
