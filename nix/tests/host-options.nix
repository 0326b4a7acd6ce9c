# TEST DOUBLE: NOT NixOS. Declares the few NixOS options nix/module.nix writes to, so the
# module can be evaluated without the rest of NixOS (with the stand-in lib or the real one).
# The types are close to NixOS's: a unit's serviceConfig takes booleans, integers, strings and
# lists of strings, as systemd unit options do.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  listOfStr = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  unit = types.submodule {
    options = {
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = listOfStr;
      requiredBy = listOfStr;
      after = listOfStr;
      before = listOfStr;
      wants = listOfStr;
      requires = listOfStr;
      bindsTo = listOfStr;
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
      path = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      unitConfig = mkOption {
        type = types.attrsOf (
          types.oneOf [
            types.bool
            types.int
            types.str
            (types.listOf types.str)
          ]
        );
        default = { };
      };
      serviceConfig = mkOption {
        type = types.attrsOf (
          types.oneOf [
            types.bool
            types.int
            types.str
            (types.listOf types.str)
          ]
        );
        default = { };
      };
    };
  };
  user = types.submodule {
    options = {
      isSystemUser = mkOption {
        type = types.bool;
        default = false;
      };
      isNormalUser = mkOption {
        type = types.bool;
        default = false;
      };
      group = mkOption {
        type = types.str;
        default = "";
      };
      home = mkOption {
        type = types.str;
        default = "/var/empty";
      };
      description = mkOption {
        type = types.str;
        default = "";
      };
      extraGroups = listOfStr;
    };
  };
  group = types.submodule {
    options.gid = mkOption {
      type = types.nullOr types.int;
      default = null;
    };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.attrs;
      default = [ ];
    };
    warnings = listOfStr;
    users.users = mkOption {
      type = types.attrsOf user;
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf group;
      default = { };
    };
    systemd.services = mkOption {
      type = types.attrsOf unit;
      default = { };
    };
    systemd.tmpfiles.rules = listOfStr;
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
  };
}
