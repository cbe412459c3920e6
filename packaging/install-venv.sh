#!/bin/sh
# Install wlmd into its own virtual environment, PREFIX/lib/wlmd, and link its public
# commands, wlmd, wlmd-findscu and wlmctl, into PREFIX/bin. Used by make install and debian/rules.
#
#   packaging/install-venv.sh PYTHON PREFIX [DESTDIR]
#
# Why a private environment: Debian 12 lacks pynetdicom and has older pydicom/psutil than wlmd
# needs, and pip must never write into the system Python as root. The environment is built from
# wheels at install (package build) time; nothing is fetched when the package is installed.
# With DESTDIR the environment is built in the staging tree and its paths are rewritten to
# PREFIX, as dh-virtualenv does. The `findscu` command stays inside the environment, so it
# never shadows DCMTK's /usr/bin/findscu.
set -eu

python=${1:?usage: install-venv.sh PYTHON PREFIX [DESTDIR]}
prefix=${2:?usage: install-venv.sh PYTHON PREFIX [DESTDIR]}
destdir=${3:-}
source_dir=$(cd "$(dirname "$0")/.." && pwd)
final="$prefix/lib/wlmd"
staged="$destdir$final"

# The environment links to the base interpreter of PYTHON (a venv's python works too); the
# service runs as user wlmd with ProtectHome=yes, so that interpreter must live outside /home
# and /root.
base=$("$python" -c 'import os, sys; print(os.path.realpath(sys._base_executable))')
case "$base" in
/home/* | /root/*)
    echo "warning: $base is under /home or /root; wlmd.service (ProtectHome=yes, user" \
        "wlmd) cannot run it. Use PYTHON=/usr/bin/python3." >&2 ;;
esac

rm -rf "$staged"
"$python" -m venv "$staged"
"$staged/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    --prefer-binary "$source_dir"
"$staged/bin/python" -m pip uninstall --quiet --yes pip setuptools 2>/dev/null || true
# The dependencies' own test suites and test images (13 MB) are never used by wlmd.
site_packages=$(echo "$staged"/lib/python3*/site-packages)
rm -rf "$site_packages/pynetdicom/tests" "$site_packages/pydicom/data/test_files" \
    "$site_packages"/wlmd-*.dist-info/direct_url.json "$staged/bin/Activate.ps1"

if [ -n "$destdir" ]; then
    # Scripts, activate files and pyvenv.cfg name the staging path; make them name PREFIX.
    grep -rlI --null -F "$staged" "$staged/bin" "$staged/pyvenv.cfg" |
        xargs -0 -r sed -i "s#$staged#$final#g"
fi
# Byte-code compiled now, checked by source hash (package mtimes are clamped), with the
# installed paths in tracebacks, so nothing is written below PREFIX at run time.
find "$staged" -name __pycache__ -type d -prune -exec rm -rf {} +
"$staged/bin/python" -m compileall -q -j 0 --invalidation-mode checked-hash \
    ${destdir:+-s "$destdir" -p /} "$staged/lib"

install -d "$destdir$prefix/bin"
for command in wlmd wlmd-findscu wlmctl; do
    ln -sfn "$final/bin/$command" "$destdir$prefix/bin/$command"
done
