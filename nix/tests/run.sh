#!/usr/bin/env bash
# Offline checks of the Nix packaging: flake.nix, nix/package.nix, nix/module.nix.
#
#   bash nix/tests/run.sh                          # what CI runs
#   NIXPKGS=/path/to/nixpkgs bash nix/tests/run.sh # also against a real nixpkgs checkout
#
# nixpkgs cannot be fetched in CI, so the checks use TEST DOUBLES kept in nix/tests/:
# stub-nixpkgs/ (a package set and a small model of nixpkgs' lib and module system) and
# host-options.nix (the NixOS options the module writes to). With NIXPKGS set, the module
# test and `nix flake check --no-build` also run against that nixpkgs.
#
# Checks:
#   parse       nix-instantiate --parse on every .nix file (syntax, undefined names)
#   module      nix/tests/module-test.nix: the rendered unit of services.purellm
#   module-bad  wrong option names and types fail, with the module system's message
#   flake       nix/tests/flake-test.nix: packages, torch flavours, overlay, app, module, shell
#   flake-check nix flake check against the stand-in nixpkgs (--override-input)
#   install     the package's install check command, run against a pip-installed purellm
#
# Nothing here builds a real package: no torch, ROCm or CUDA build is tested.
# Installs Debian's nix-bin when nix is missing (as root); needs no network otherwise, except
# PyPI for the `install` check (pip builds purellm with setuptools).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
started=$SECONDS

if ! command -v nix-instantiate >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing nix-bin (Debian) ..."
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq && apt-get install -y -qq nix-bin; } >/tmp/nix-bin-install.log 2>&1; then
            tail -n 20 /tmp/nix-bin-install.log
            echo "FAIL: could not install nix-bin"
            exit 1
        fi
    else
        echo "FAIL: nix-instantiate not found (Debian: apt-get install nix-bin)"
        exit 1
    fi
fi

# Flakes are experimental in Nix 2.8; no binary cache (offline). As root in a container,
# build without a sandbox or build users (the stand-in's trivial derivations need neither).
NIX_CONFIG="experimental-features = nix-command flakes
substituters =
${NIX_CONFIG:-}"
if [ "$(id -u)" = 0 ]; then
    NIX_CONFIG="$NIX_CONFIG
sandbox = false
build-users-group ="
fi
export NIX_CONFIG

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
failures=()

# check NAME COMMAND...: run, keep the output, report.
check() {
    local name=$1
    shift
    local t0=$SECONDS
    if "$@" >"$work/$name.log" 2>&1; then
        passed=$((passed + 1))
        printf 'ok    %-22s %3ss  %s\n' "$name" $((SECONDS - t0)) "$(tail -n 1 "$work/$name.log")"
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf 'FAIL  %-22s %3ss\n' "$name" $((SECONDS - t0))
        sed 's/^/      /' "$work/$name.log" | tail -n 40
    fi
}

nix_files() {
    find "$repo/flake.nix" "$repo/nix" -name '*.nix' -type f | sort
}

parse_all() {
    local n=0 f
    while IFS= read -r f; do
        nix-instantiate --parse "$f" >/dev/null || { echo "in $f"; return 1; }
        n=$((n + 1))
    done < <(nix_files)
    echo "$n files parse"
}

# module_test [LIB_EXPR]: the positive cases, with the stand-in lib or the given one.
module_test() {
    local args=()
    [ $# -gt 0 ] && args=(--arg lib "$1")
    nix-instantiate --eval --strict "$here/module-test.nix" -A summary "${args[@]}" | tr -d '"'
}

# Each case must fail to evaluate with this message (the same words as nixpkgs' lib).
bad_cases=(
    "unknownOption|The option \`services.purellm.prot' does not exist"
    "portString|option \`services.purellm.port' is not of type"
    "accelerationVulkan|option \`services.purellm.acceleration' is not of type"
    "apiKeyFilePath|option \`services.purellm.apiKeyFile' is not of type"
    "modelPath|option \`services.purellm.model' is not of type"
    "environmentInt|option \`services.purellm.environmentVariables.PURELLM_NUM_THREADS' is not of type"
    "extraArgsString|option \`services.purellm.extraArgs' is not of type"
    "hostNull|option \`services.purellm.host' is not of type"
    "cudaWithoutUnfree|unfree"
)
module_bad() {
    local args=() entry name want out n=0
    [ $# -gt 0 ] && args=(--arg lib "$1")
    for entry in "${bad_cases[@]}"; do
        name=${entry%%|*}
        want=${entry#*|}
        if out=$(nix-instantiate --eval --strict "$here/module-test.nix" -A "bad.$name" "${args[@]}" 2>&1); then
            echo "bad.$name evaluated but must fail: $out"
            return 1
        fi
        if ! grep -qF -- "$want" <<<"$out"; then
            echo "bad.$name failed without the expected message ($want):"
            echo "$out"
            return 1
        fi
        n=$((n + 1))
    done
    echo "$n wrong settings refused"
}

# `nix eval`, not `nix-instantiate --eval`: the test reads the package's source from the store,
# which the read-only `--eval` mode does not write.
flake_test() {
    nix eval --raw --file "$here/flake-test.nix" summary && echo
}

# `nix flake check` sees only a git checkout's tracked files, and would copy caches and .git
# with a `path:` ref of the repository: check a copy of what the flake uses instead.
make_flake_copy() {
    mkdir -p "$work/flake"
    cp -r "$repo/flake.nix" "$repo/nix" "$repo/pyproject.toml" "$repo/README.md" "$repo/purellm" "$work/flake/"
    [ -e "$repo/LICENSE" ] && cp "$repo/LICENSE" "$work/flake/"
    find "$work/flake" -name __pycache__ -type d -prune -exec rm -rf {} +
}

# flake_check NIXPKGS_PATH [EXTRA...]
flake_check() {
    local input=$1
    shift
    nix flake check "path:$work/flake" --no-write-lock-file \
        --override-input nixpkgs "path:$input" "$@" && echo "nix flake check passed"
}

# The package's install check (its checkPhase) against purellm installed by pip from the
# same source: the console script must print what the grep expects.
install_check() {
    local phase venv=$work/venv
    phase=$(nix eval --raw --file "$here/flake-test.nix" installCheckPhase) || return 1
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "$work/flake" || return 1
    (
        runHook() { :; }
        out=$venv
        set -e
        eval "$phase"
    ) || { echo "the install check failed: $phase"; return 1; }
    echo "install check passed: $("$venv/bin/purellm" --version)"
}

echo "Nix packaging checks ($(nix --version))"
check parse parse_all
check module module_test
check module-bad module_bad
check flake flake_test
make_flake_copy
check flake-check flake_check "$work/flake/nix/tests/stub-nixpkgs"
check install install_check
if [ -n "${NIXPKGS:-}" ]; then
    nixpkgs=$(cd "$NIXPKGS" && pwd)
    check module-nixpkgs module_test "import $nixpkgs/lib"
    check module-bad-nixpkgs module_bad "import $nixpkgs/lib"
    check flake-check-nixpkgs flake_check "$nixpkgs" --no-build
fi

echo "nix: $passed passed, $failed failed ($((SECONDS - started))s)${failures[*]:+: ${failures[*]}}"
[ "$failed" -eq 0 ]
