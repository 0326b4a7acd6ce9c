# TEST DOUBLE: NOT nixpkgs. nix/tests/run.sh runs
#   nix flake check --override-input nixpkgs path:<this folder>
# so that the flake's structure and wiring can be checked offline. `lib` is the small model
# of nixpkgs' lib in ./lib.nix; `import <this flake> { system; config; overlays; }` gives the
# package set of ./default.nix.
{
  description = "TEST DOUBLE of nixpkgs for purellm's offline Nix checks";
  outputs =
    { self }:
    {
      lib = import ./lib.nix;
    };
}
