# TEST DOUBLE: NOT nixpkgs. What `import nixpkgs { system; config; overlays; }` gives in the
# offline checks: a package set holding only what flake.nix, nix/package.nix and nix/module.nix
# use, made of real but trivial derivations (never built; `nix flake check` instantiates them).
#
# It models the nixpkgs behaviour the flake relies on:
# - python3Packages.torch takes `rocmSupport` / `cudaSupport` (default: `config.rocmSupport` /
#   `config.cudaSupport`) and `gpuTargets`, as the real torch/source/default.nix does, and
#   exposes them as attributes (the real torch exposes the first two);
# - a CUDA torch refuses to evaluate unless `config.allowUnfree`, like the real CUDA packages;
# - `python3.override { packageOverrides; }` rebuilds the Python package set;
# - buildPythonApplication refuses two different builds of one package in its closure, like
#   nixpkgs' pythonCatchConflictsHook, and needs every dependency to be a derivation.
{
  system,
  config ? { },
  overlays ? [ ],
  ...
}:
let
  lib = import ./lib.nix;

  config' = {
    allowUnfree = false;
    rocmSupport = false;
    cudaSupport = false;
  }
  // config;

  mkDrv =
    {
      name,
      env ? { },
      passthru ? { },
      meta ? { },
    }:
    derivation (
      {
        inherit name system;
        builder = "/bin/sh";
        args = [
          "-c"
          "echo ${name} > $out"
        ];
      }
      // env
    )
    // passthru
    // {
      inherit meta;
    };

  base =
    final:
    let
      makePython =
        {
          packageOverrides ? (pyfinal: pyprev: { }),
          ...
        }:
        let
          drv = mkDrv { name = "python3-3.12.9"; };
          python = drv // {
            pythonVersion = "3.12";
            sitePackages = "lib/python3.12/site-packages";
            interpreter = "${drv}/bin/python3.12";
            pkgs = lib.fix (lib.extends packageOverrides (pythonPackages python));
            withPackages =
              f:
              mkDrv {
                name = "python3-3.12.9-env";
                env.paths = f python.pkgs;
              };
            override = makePython;
          };
        in
        python;

      closure = concatMap' (p: [ p ] ++ closure (p.dependencies or [ ]));
      concatMap' = f: xs: builtins.concatMap f xs;

      buildPython =
        python: kind: attrs:
        let
          deps = attrs.dependencies or [ ] ++ attrs.propagatedBuildInputs or [ ];
          notDrv = builtins.filter (d: !(lib.isDerivation d)) deps;
          all' = closure deps;
          conflicts = builtins.filter (
            p:
            builtins.length (
              lib.unique (map (q: q.outPath) (builtins.filter (q: (q.pname or "") == p.pname) all'))
            ) > 1
          ) (builtins.filter (p: p ? pname) all');
          name =
            if kind == "application" then
              "${attrs.pname}-${attrs.version}"
            else
              "python3.12-${attrs.pname}-${attrs.version}";
        in
        if !(attrs ? src) then
          throw "${name}: no src"
        else if notDrv != [ ] then
          throw "${name}: a dependency is not a derivation"
        else if conflicts != [ ] then
          throw "Found duplicated packages in closure for dependency '${(builtins.head conflicts).pname}'"
        else
          mkDrv {
            inherit name;
            env = {
              inherit (attrs) src;
              propagatedBuildInputs = deps;
              nativeBuildInputs = attrs.build-system or [ ];
              installCheckPhase = attrs.checkPhase or "";
              doInstallCheck = attrs.doCheck or true;
            };
            passthru =
              (attrs.passthru or { })
              // {
                inherit (attrs) pname version;
                dependencies = deps;
                pythonModule = python;
              }
              // lib.optionalAttrs (attrs ? dontCheckRuntimeDeps) { inherit (attrs) dontCheckRuntimeDeps; }
              // lib.optionalAttrs (attrs ? format) { inherit (attrs) format; };
            meta = attrs.meta or { };
          };

      pythonPackages =
        python: self:
        let
          simple =
            pname: dependencies:
            self.buildPythonPackage {
              inherit pname dependencies;
              version = "1.0";
              src = final.writeText "${pname}-src" pname;
            };
          # Packages that exist in nixpkgs' python3Packages under these names, as plain
          # stand-ins: what a FastAPI server and an HF/torch stack may add to pyproject.toml.
          # A dependency missing here fails flake-test/flake-check with "...python3Packages
          # lacks 'NAME'": check that nixpkgs has it, then add it to this list.
          plain = lib.genAttrs [
            "aiohttp"
            "anyio"
            "filelock"
            "fsspec"
            "h11"
            "httptools"
            "httpx"
            "openai"
            "orjson"
            "packaging"
            "pillow"
            "prometheus-client"
            "protobuf"
            "psutil"
            "pydantic-core"
            "pytest-asyncio"
            "python-dotenv"
            "python-multipart"
            "pyyaml"
            "regex"
            "requests"
            "sentencepiece"
            "sse-starlette"
            "starlette"
            "tiktoken"
            "tqdm"
            "typing-extensions"
            "watchfiles"
            "websockets"
          ] (name: simple name [ ]);
        in
        plain
        // {
          inherit python;
          callPackage = lib.callPackageWith (final // self);
          buildPythonPackage = buildPython python "package";
          buildPythonApplication = buildPython python "application";
          inherit (final) fetchPypi fetchurl;
          setuptools = simple "setuptools" [ ];
          torch = lib.makeOverridable (
            {
              rocmSupport ? config'.rocmSupport,
              cudaSupport ? config'.cudaSupport,
              gpuTargets ? [ ],
            }:
            if rocmSupport && cudaSupport then
              throw "torch: CUDA and ROCm are mutually exclusive"
            else if cudaSupport && !config'.allowUnfree then
              throw "Package 'cuda_nvcc' in the stand-in nixpkgs has an unfree license ('CUDA EULA'), refusing to evaluate."
            else
              self.buildPythonPackage {
                pname = "torch";
                version = "2.9.0";
                src = final.writeText "torch-src" (
                  builtins.toJSON {
                    inherit rocmSupport cudaSupport gpuTargets;
                  }
                );
                passthru = {
                  inherit rocmSupport cudaSupport gpuTargets;
                };
              }
          ) { };
          numpy = simple "numpy" [ ];
          huggingface-hub = simple "huggingface-hub" [ ];
          tokenizers = simple "tokenizers" [ self.huggingface-hub ];
          safetensors = simple "safetensors" [ ];
          transformers = simple "transformers" [
            self.huggingface-hub
            self.numpy
            self.safetensors
            self.tokenizers
          ];
          gguf = simple "gguf" [ self.numpy ];
          jinja2 = simple "jinja2" [ ];
          pydantic = simple "pydantic" [ ];
          llguidance = simple "llguidance" [ ];
          fastapi = simple "fastapi" [ self.pydantic ];
          uvicorn = simple "uvicorn" [ ] // {
            optional-dependencies.standard = [ self.uvloop ];
          };
          uvloop = simple "uvloop" [ ];
          pytest = simple "pytest" [ ];
        };
    in
    {
      inherit lib system;
      config = config';
      callPackage = lib.callPackageWith final;
      python3 = makePython { };
      python3Packages = final.python3.pkgs;
      writeText =
        name: text:
        mkDrv {
          inherit name;
          env = { inherit text; };
        };
      runCommand =
        name: env: script:
        derivation (
          {
            inherit name system;
            builder = "/bin/sh";
            args = [
              "-c"
              script
            ];
          }
          // env
        );
      fetchurl =
        { url, hash, ... }:
        mkDrv {
          name = baseNameOf url;
          env = { inherit url hash; };
          passthru = { inherit url hash; };
        };
      fetchPypi =
        { pname, version, hash, ... }:
        mkDrv {
          name = "${pname}-${version}.whl";
          env = { inherit pname version hash; };
          passthru = { inherit pname version hash; };
        };
      mkShell =
        {
          packages ? [ ],
          shellHook ? "",
          ...
        }:
        mkDrv {
          name = "nix-shell";
          env = { inherit packages shellHook; };
          passthru = { inherit packages shellHook; };
        };
      ruff = mkDrv {
        name = "ruff-0.9.0";
        meta.mainProgram = "ruff";
      };
    };
in
lib.fix (builtins.foldl' (f: overlay: lib.extends overlay f) base overlays)
