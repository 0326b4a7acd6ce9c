{
  description = "purellm: an OpenAI-compatible LLM inference server in plain PyTorch";

  # No flake.lock is committed: as an input of your own flake, add
  #   inputs.purellm.inputs.nixpkgs.follows = "nixpkgs";
  # so that purellm is built with (and shares torch with) your system's nixpkgs.
  # Standalone (`nix run`, `nix build`), nixos-unstable is resolved when used;
  # `nix flake lock` pins it in your checkout. See docs/nixos.md.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "aarch64-darwin"
      ];
      forAllSystems = lib.genAttrs systems;
      pkgsFor =
        system: config:
        import nixpkgs {
          inherit system config;
          overlays = [ self.overlays.default ];
        };
    in
    {
      # pkgs.purellm, built with the nixpkgs it is applied to (and so with its config:
      # `rocmSupport = true` there gives a ROCm torch).
      overlays.default = final: prev: { purellm = final.callPackage ./nix/package.nix { }; };

      packages = forAllSystems (
        system:
        let
          pkgs = pkgsFor system { };
        in
        {
          # CPU torch, from the binary cache.
          default = pkgs.purellm;
        }
        // lib.optionalAttrs (system == "x86_64-linux") {
          # ROCm torch compiled for the MI50 / Radeon VII only (torch builds locally, for
          # hours). Another card: packages.x86_64-linux.rocm.override { gpuTargets = [ "gfx1100" ]; }
          rocm = pkgs.purellm.override {
            acceleration = "rocm";
            gpuTargets = [ "gfx906" ];
          };
        }
        // lib.optionalAttrs (lib.hasSuffix "-linux" system) {
          # CUDA torch: nixpkgs instantiated with cudaSupport (what the CUDA binary cache
          # holds) and allowUnfree (the CUDA toolkit's licence).
          cuda =
            (pkgsFor system {
              allowUnfree = true;
              cudaSupport = true;
            }).purellm.override
              { acceleration = "cuda"; };
        }
      );

      apps = forAllSystems (system: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${system}.default;
        };
      });

      # services.purellm; see nix/module.nix and docs/nixos.md.
      nixosModules.default = {
        imports = [ ./nix/module.nix ];
      };
      nixosModules.purellm = self.nixosModules.default;

      # A Python with purellm's dependencies (CPU torch) and the test tools; run from the
      # checkout: `python -m purellm ...`, `python -m pytest -q`.
      devShells = forAllSystems (
        system:
        let
          pkgs = pkgsFor system { };
          inherit (pkgs) purellm;
        in
        {
          default = pkgs.mkShell {
            packages = [
              (purellm.python.withPackages (ps: purellm.pythonDependencies ++ [ ps.pytest ]))
              pkgs.ruff
            ];
            shellHook = ''
              export PYTHONPATH="$PWD''${PYTHONPATH:+:$PYTHONPATH}"
              export HF_HUB_OFFLINE=1
            '';
          };
        }
      );

      checks = forAllSystems (
        system:
        let
          pkgs = pkgsFor system { };
          # The module test (nix/tests/module-test.nix) evaluated with this nixpkgs' lib.
          moduleTest = import ./nix/tests/module-test.nix { inherit lib; };
        in
        {
          package = self.packages.${system}.default;
          module = pkgs.runCommand "purellm-module-test" { summary = moduleTest.summary; } ''
            echo "$summary" > "$out"
          '';
        }
      );
    };
}
