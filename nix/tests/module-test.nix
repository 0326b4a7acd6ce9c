# The services.purellm test: evaluates nix/module.nix with the module system and checks the
# unit it renders (ExecStart and its flags, environment, LoadCredential, firewall, hardening,
# readiness, users, the torch the package gets) and that wrong option names and types fail.
#
#   nix-instantiate --eval --strict nix/tests/module-test.nix -A summary
#   nix-instantiate --eval --strict nix/tests/module-test.nix -A summary \
#     --arg lib 'import /path/to/nixpkgs/lib'            # the real lib instead of the stand-in
#   nix-instantiate --eval --strict nix/tests/module-test.nix -A bad.portString   # must fail
#
# `lib` defaults to the TEST DOUBLE in ./stub-nixpkgs/lib.nix. The packages always come from
# the stand-in nixpkgs (./stub-nixpkgs), and the NixOS options the module writes to from
# ./host-options.nix (also a test double), whichever lib is used.
{
  lib ? import ./stub-nixpkgs/lib.nix,
}:
let
  pkgsWith =
    config:
    import ./stub-nixpkgs {
      system = "x86_64-linux";
      inherit config;
      overlays = [ (final: prev: { purellm = final.callPackage ../package.nix { }; }) ];
    };
  pkgs = pkgsWith { };

  evalWith =
    {
      name,
      settings,
      pkgsConfig ? { },
    }:
    (lib.evalModules {
      modules = [
        ../module.nix
        ./host-options.nix
        {
          _file = "module-test.nix, case ${name}";
          services.purellm = settings;
        }
      ];
      specialArgs.pkgs = pkgsWith pkgsConfig;
    }).config;
  eval = name: settings: evalWith {
    inherit name;
    settings = {
      enable = true;
    }
    // settings;
  };

  unit = c: c.systemd.services.purellm;
  service = c: (unit c).serviceConfig;
  env = c: (unit c).environment;
  package = c: builtins.head c.environment.systemPackages;
  exe = c: "${package c}/bin/purellm";
  failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  pick = names: set: lib.filterAttrs (n: _: builtins.elem n names) set;

  # The desktop in docs/nixos.md: an MI50 through ROCm, picked by its UUID.
  mi50 = eval "mi50" {
    acceleration = "rocm";
    gpuTargets = [ "gfx906" ];
    model = "qwen2.5-coder:7b";
    servedModelName = "qwen2.5-coder";
    apiKeyFile = "/run/secrets/purellm-api-key";
    environmentVariables.HIP_VISIBLE_DEVICES = "GPU-0e54792172da5eeb";
    host = "0.0.0.0";
    openFirewall = true;
    extraArgs = [
      "--max-model-len"
      "16384"
    ];
  };
  defaults = eval "defaults" { };
  disabled = evalWith {
    name = "disabled";
    settings = { };
  };
  followsRocmConfig = evalWith {
    name = "followsRocmConfig";
    settings.enable = true;
    pkgsConfig.rocmSupport = true;
  };
  cpuDespiteConfig = evalWith {
    name = "cpuDespiteConfig";
    settings = {
      enable = true;
      acceleration = false;
    };
    pkgsConfig.rocmSupport = true;
  };
  cuda = evalWith {
    name = "cuda";
    settings = {
      enable = true;
      acceleration = "cuda";
    };
    pkgsConfig.allowUnfree = true;
  };
  prebuiltRocm = eval "prebuiltRocm" {
    package = pkgs.purellm.override {
      acceleration = "rocm";
      gpuTargets = [ "gfx906" ];
    };
  };
  staticUser = eval "staticUser" { user = "purellm"; };
  srvState = eval "srvState" {
    user = "llm";
    stateDir = "/srv/purellm";
  };
  srvStateDynamic = eval "srvStateDynamic" { stateDir = "/srv/purellm"; };
  keyInStore = eval "keyInStore" { apiKeyFile = "/nix/store/0000-key"; };
  keyRelative = eval "keyRelative" { apiKeyFile = "secrets/key"; };
  noDefaultModel = eval "noDefaultModel" {
    package = pkgs.purellm.override { withDefaultModel = false; };
  };
  noDefaultModelButModel = eval "noDefaultModelButModel" {
    package = pkgs.purellm.override { withDefaultModel = false; };
    acceleration = "rocm";
    model = "/var/lib/purellm/models/m.gguf";
  };
  escaping = eval "escaping" {
    model = "/srv/models/my model 100%.gguf";
    servedModelName = [
      "coder"
      "qwen"
    ];
    extraArgs = [
      "--chat-template"
      "{{ $x }}"
    ];
  };
  ipv6Any = eval "ipv6Any" { host = "::"; };
  ipv6 = eval "ipv6" {
    host = "fd00::1";
    port = 8080;
  };
  overrideGfx = eval "overrideGfx" {
    rocmOverrideGfx = "10.3.0";
    environmentVariables.HF_HOME = "/models/hf";
  };
  homeModel = eval "homeModel" { model = "/home/alice/models/q.gguf"; };

  tests = {
    mi50ExecStart = {
      expr = (service mi50).ExecStart;
      expected = "${exe mi50} serve qwen2.5-coder:7b --host 0.0.0.0 --port 8000 --served-model-name qwen2.5-coder --api-key-file %d/api-key --max-model-len 16384";
    };
    mi50Environment = {
      expr = env mi50;
      expected = {
        HIP_VISIBLE_DEVICES = "GPU-0e54792172da5eeb";
        HOME = "/var/lib/purellm";
        HF_HOME = "/var/lib/purellm/huggingface";
        PYTHONUNBUFFERED = "1";
      };
    };
    mi50LoadCredential = {
      expr = (service mi50).LoadCredential;
      expected = [ "api-key:/run/secrets/purellm-api-key" ];
    };
    mi50KeyNotOnCommandLine = {
      expr =
        lib.hasInfix "/run/secrets" (service mi50).ExecStart
        || builtins.any (lib.hasInfix "/run/secrets") (builtins.attrValues (env mi50));
      expected = false;
    };
    mi50Firewall = {
      expr = mi50.networking.firewall.allowedTCPPorts;
      expected = [ 8000 ];
    };
    mi50Torch = {
      expr = {
        inherit (package mi50) acceleration;
        inherit ((package mi50).torch) rocmSupport cudaSupport gpuTargets;
      };
      expected = {
        acceleration = "rocm";
        rocmSupport = true;
        cudaSupport = false;
        gpuTargets = [ "gfx906" ];
      };
    };
    mi50Hardening = {
      expr = pick [
        "CapabilityBoundingSet"
        "DevicePolicy"
        "DynamicUser"
        "LockPersonality"
        "MemoryDenyWriteExecute"
        "NoNewPrivileges"
        "PrivateDevices"
        "PrivateTmp"
        "ProtectHome"
        "ProtectKernelTunables"
        "ProtectSystem"
        "RestrictAddressFamilies"
        "RestrictNamespaces"
        "SupplementaryGroups"
        "SystemCallArchitectures"
        "SystemCallErrorNumber"
        "SystemCallFilter"
        "UMask"
      ] (service mi50);
      expected = {
        CapabilityBoundingSet = "";
        DevicePolicy = "closed";
        DynamicUser = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = false;
        NoNewPrivileges = true;
        PrivateDevices = false;
        PrivateTmp = true;
        ProtectHome = true;
        ProtectKernelTunables = true;
        ProtectSystem = "strict";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        SupplementaryGroups = [
          "render"
          "video"
        ];
        SystemCallArchitectures = "native";
        SystemCallErrorNumber = "EPERM";
        SystemCallFilter = [
          "@system-service @resources"
          "~@privileged"
        ];
        UMask = "0077";
      };
    };
    mi50Devices = {
      expr = builtins.filter (d: builtins.elem d (service mi50).DeviceAllow) [
        "char-drm"
        "char-kfd"
        "char-nvidiactl"
        "char-nvidia-uvm"
      ];
      expected = [
        "char-drm"
        "char-kfd"
        "char-nvidiactl"
        "char-nvidia-uvm"
      ];
    };
    mi50Lifecycle = {
      expr = pick [
        "Type"
        "Restart"
        "StateDirectory"
        "WorkingDirectory"
        "TimeoutStartSec"
      ] (service mi50);
      expected = {
        Type = "exec";
        Restart = "on-failure";
        StateDirectory = "purellm";
        WorkingDirectory = "/var/lib/purellm";
        TimeoutStartSec = "30min";
      };
    };
    mi50Readiness = {
      expr = builtins.match "/nix/store/[^ ]+/bin/python3[.0-9]* /nix/store/[a-z0-9]+-wait-ready[.]py (.*)" (
        service mi50
      ).ExecStartPost;
      expected = [ "http://127.0.0.1:8000/health" ];
    };
    mi50Unit = {
      expr = pick [
        "wantedBy"
        "after"
      ] (unit mi50);
      expected = {
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
      };
    };
    mi50Assertions = {
      expr = failed mi50;
      expected = [ ];
    };

    defaultsExecStart = {
      expr = (service defaults).ExecStart;
      expected = "${exe defaults} serve --host 127.0.0.1 --port 8000";
    };
    defaultsNoCredentialNoFirewallNoUsers = {
      expr = {
        credential = (service defaults) ? LoadCredential;
        ports = defaults.networking.firewall.allowedTCPPorts;
        users = defaults.users.users;
        groups = defaults.users.groups;
        tmpfiles = defaults.systemd.tmpfiles.rules;
        user = (service defaults) ? User;
        assertions = failed defaults;
      };
      expected = {
        credential = false;
        ports = [ ];
        users = { };
        groups = { };
        tmpfiles = [ ];
        user = false;
        assertions = [ ];
      };
    };
    defaultsCpuTorchWithDefaultModel = {
      expr = {
        inherit (package defaults) acceleration hasDefaultModel;
        inherit ((package defaults).torch) rocmSupport cudaSupport;
      };
      expected = {
        acceleration = null;
        hasDefaultModel = true;
        rocmSupport = false;
        cudaSupport = false;
      };
    };
    defaultsPackageIsThePackage = {
      expr = (package defaults).outPath;
      expected = pkgs.purellm.outPath;
    };
    disabledRendersNothing = {
      expr = {
        services = disabled.systemd.services;
        ports = disabled.networking.firewall.allowedTCPPorts;
        packages = disabled.environment.systemPackages;
        assertions = disabled.assertions;
      };
      expected = {
        services = { };
        ports = [ ];
        packages = [ ];
        assertions = [ ];
      };
    };
    nullAccelerationFollowsNixpkgsConfig = {
      expr = (package followsRocmConfig).torch.rocmSupport;
      expected = true;
    };
    falseAccelerationIsCpu = {
      expr = (package cpuDespiteConfig).torch.rocmSupport;
      expected = false;
    };
    cudaTorch = {
      expr = {
        inherit ((package cuda).torch) cudaSupport rocmSupport;
      };
      expected = {
        cudaSupport = true;
        rocmSupport = false;
      };
    };
    givenRocmPackageKept = {
      expr = {
        inherit ((package prebuiltRocm).torch) rocmSupport gpuTargets;
      };
      expected = {
        rocmSupport = true;
        gpuTargets = [ "gfx906" ];
      };
    };
    overrideKeepsOtherArguments = {
      expr = {
        inherit (package noDefaultModelButModel) hasDefaultModel acceleration;
        assertions = failed noDefaultModelButModel;
      };
      expected = {
        hasDefaultModel = false;
        acceleration = "rocm";
        assertions = [ ];
      };
    };
    staticUserCreated = {
      expr = {
        user = staticUser.users.users.purellm;
        groups = builtins.attrNames staticUser.users.groups;
        service = pick [
          "User"
          "Group"
          "DynamicUser"
        ] (service staticUser);
      };
      expected = {
        user = {
          isSystemUser = true;
          isNormalUser = false;
          group = "purellm";
          home = "/var/lib/purellm";
          description = "purellm service user";
          extraGroups = [ ];
        };
        groups = [ "purellm" ];
        service = {
          User = "purellm";
          Group = "purellm";
          DynamicUser = false;
        };
      };
    };
    stateDirOutsideVarLib = {
      expr = {
        service = pick [
          "ReadWritePaths"
          "StateDirectory"
          "WorkingDirectory"
        ] (service srvState);
        tmpfiles = srvState.systemd.tmpfiles.rules;
        home = (env srvState).HOME;
        assertions = failed srvState;
      };
      expected = {
        service = {
          ReadWritePaths = [ "/srv/purellm" ];
          WorkingDirectory = "/srv/purellm";
        };
        tmpfiles = [ "d /srv/purellm 0750 llm llm - -" ];
        home = "/srv/purellm";
        assertions = [ ];
      };
    };
    stateDirOutsideVarLibNeedsUser = {
      expr = failed srvStateDynamic;
      expected = [
        "services.purellm.stateDir outside /var/lib needs services.purellm.user (a DynamicUser cannot own it)."
      ];
    };
    apiKeyFileInStoreRefused = {
      expr = builtins.length (failed keyInStore);
      expected = 1;
    };
    apiKeyFileRelativeRefused = {
      expr = builtins.length (failed keyRelative);
      expected = 1;
    };
    modelRequiredWithoutDefaultModel = {
      expr = failed noDefaultModel;
      expected = [
        "services.purellm.model is unset and the package has no default model: set services.purellm.model."
      ];
    };
    execStartEscaping = {
      expr = (service escaping).ExecStart;
      expected = "${exe escaping} serve \"/srv/models/my model 100%%.gguf\" --host 127.0.0.1 --port 8000 --served-model-name coder qwen --chat-template \"{{ $$x }}\"";
    };
    healthOnIpv6Loopback = {
      expr = builtins.match ".* (http://.*)" (service ipv6Any).ExecStartPost;
      expected = [ "http://[::1]:8000/health" ];
    };
    healthOnIpv6Address = {
      expr = builtins.match ".* (http://.*)" (service ipv6).ExecStartPost;
      expected = [ "http://[fd00::1]:8080/health" ];
    };
    rocmOverrideGfxAndUserEnvironmentWins = {
      expr = pick [
        "HSA_OVERRIDE_GFX_VERSION"
        "HF_HOME"
      ] (env overrideGfx);
      expected = {
        HSA_OVERRIDE_GFX_VERSION = "10.3.0";
        HF_HOME = "/models/hf";
      };
    };
    modelUnderHomeIsReadable = {
      expr = (service homeModel).ProtectHome;
      expected = "read-only";
    };
  };

  failures = lib.filterAttrs (_: t: t.expr != t.expected) tests;
  show = v: builtins.toJSON v;
  libName = if lib.isTestDouble or false then "the stand-in lib (nix/tests)" else "nixpkgs lib";
  count = builtins.length (builtins.attrNames tests);

  # Cases that must fail to evaluate; run.sh checks each one's error message.
  force =
    c:
    builtins.deepSeq [
      (service c).ExecStart
      (env c)
      (failed c)
      c.networking.firewall.allowedTCPPorts
    ] "evaluated (but should have failed)";
  bad = builtins.mapAttrs (name: settings: force (eval name settings)) {
    unknownOption.prot = 8000;
    portString.port = "8000";
    accelerationVulkan.acceleration = "vulkan";
    apiKeyFilePath.apiKeyFile = ./module-test.nix;
    modelPath.model = ./.;
    environmentInt.environmentVariables.PURELLM_NUM_THREADS = 8;
    extraArgsString.extraArgs = "--max-model-len 8192";
    hostNull.host = null;
    cudaWithoutUnfree.acceleration = "cuda";
  };
in
{
  inherit bad;
  summary =
    if failures == { } then
      "module test: ${toString count} passed, 0 failed (${libName})"
    else
      throw (
        "module test: ${toString (builtins.length (builtins.attrNames failures))} of ${toString count} failed (${libName}):\n"
        + lib.concatStringsSep "\n" (
          lib.mapAttrsToList (
            name: t: "- ${name}:\n    expected ${show t.expected}\n    got      ${show t.expr}"
          ) failures
        )
      );
  # For a look at what the module renders: nix-instantiate --eval --strict --json -A rendered
  rendered = {
    inherit (unit mi50) environment serviceConfig;
  };
}
