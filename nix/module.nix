# NixOS module: services.purellm, an OpenAI-compatible LLM server (`purellm serve`).
# Modelled on nixpkgs' services.ollama (same option shapes where they overlap: acceleration,
# rocmOverrideGfx, environmentVariables, host, port, user/group, openFirewall).
# docs/nixos.md walks through a full setup.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) literalExpression mkOption types;

  cfg = config.services.purellm;

  # `acceleration` and `gpuTargets` are applied by overriding the chosen package, as
  # services.ollama does; a package without `.override` is used as it is.
  packageOverrides =
    lib.optionalAttrs (cfg.acceleration != null) { inherit (cfg) acceleration; }
    // lib.optionalAttrs (cfg.gpuTargets != null) { inherit (cfg) gpuTargets; };
  package =
    if packageOverrides != { } && cfg.package ? override then
      cfg.package.override packageOverrides
    else
      cfg.package;

  staticUser = cfg.user != null;
  # StateDirectory= only covers /var/lib; anywhere else the directory is made by tmpfiles.
  stateUnderVarLib = lib.hasPrefix "/var/lib/" cfg.stateDir;
  modelInHome =
    cfg.model != null && (lib.hasPrefix "/home/" cfg.model || lib.hasPrefix "/root/" cfg.model);
  servedModelNames = if cfg.servedModelName == null then [ ] else lib.toList cfg.servedModelName;

  # One ExecStart= word: systemd expands % specifiers and $VARIABLES in every word, so both
  # are doubled; anything but plain characters is double-quoted with C escapes (JSON's).
  execArg =
    arg:
    if builtins.match "[A-Za-z0-9_@+=:,./-]+" arg != null then
      arg
    else
      lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON arg);

  args =
    lib.optional (cfg.model != null) cfg.model
    ++ [
      "--host"
      cfg.host
      "--port"
      (toString cfg.port)
    ]
    ++ lib.optionals (servedModelNames != [ ]) ([ "--served-model-name" ] ++ servedModelNames);

  execStart = lib.concatStringsSep " " (
    [
      (lib.getExe package)
      "serve"
    ]
    ++ map execArg args
    # %d is systemd's credentials directory: the key's path, never the key, is on the command line.
    ++ lib.optional (cfg.apiKeyFile != null) "--api-key-file %d/api-key"
    ++ map execArg cfg.extraArgs
  );

  # Where the readiness check finds the server: a wildcard address is reached on loopback.
  healthHost =
    if cfg.host == "" || cfg.host == "0.0.0.0" then
      "127.0.0.1"
    else if cfg.host == "::" || cfg.host == "[::]" then
      "[::1]"
    else if lib.hasInfix ":" cfg.host && !(lib.hasPrefix "[" cfg.host) then
      "[${cfg.host}]"
    else
      cfg.host;
  healthUrl = "http://${healthHost}:${toString cfg.port}/health";
in
{
  options.services.purellm = {
    enable = lib.mkEnableOption "purellm, an OpenAI-compatible LLM inference server";

    package = mkOption {
      type = types.package;
      default = pkgs.purellm or (pkgs.callPackage ./package.nix { });
      defaultText = literalExpression "pkgs.purellm (from this flake's overlay, else nix/package.nix built with pkgs)";
      description = ''
        The purellm package. `acceleration` and `gpuTargets`, when set, are applied to it with
        `.override`.
      '';
    };

    acceleration = mkOption {
      type = types.nullOr (
        types.enum [
          false
          "rocm"
          "cuda"
        ]
      );
      default = null;
      example = "rocm";
      description = ''
        Which torch build to use.

        - `null`: torch as nixpkgs builds it, which follows `nixpkgs.config.rocmSupport` and
          `nixpkgs.config.cudaSupport` (neither set: the CPU build)
        - `false`: CPU only
        - `"rocm"`: AMD GPUs through ROCm/HIP (torch is compiled locally; set `gpuTargets`)
        - `"cuda"`: NVIDIA GPUs (needs `nixpkgs.config.allowUnfree`)
      '';
    };

    gpuTargets = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [ "gfx906" ];
      description = ''
        GPU architectures torch is compiled for: ROCm gfx names (`"gfx906"` for an MI50 or
        Radeon VII) or CUDA capabilities (`"8.6"`). `null` keeps the package's choice (torch's
        default: every architecture nixpkgs supports, a much longer build).
      '';
    };

    model = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "qwen2.5-coder:7b";
      description = ''
        What `purellm serve` loads: a Hugging Face model folder, a GGUF file (absolute paths),
        a Hugging Face repo id already in the cache under `stateDir`, or an Ollama model name
        read from an Ollama store. `null` serves the default model (SmolLM2-135M-Instruct)
        bundled with the package.

        A string, not a Nix path: a path literal would copy the model into the Nix store.
      '';
    };

    servedModelName = mkOption {
      type = types.nullOr (types.either types.str (types.listOf types.str));
      default = null;
      example = "qwen2.5-coder";
      description = ''
        The model id(s) clients use in requests (`--served-model-name`); default: the model
        argument.
      '';
    };

    host = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = "The address the HTTP server listens on.";
    };

    port = mkOption {
      type = types.port;
      default = 8000;
      description = "The port the HTTP server listens on.";
    };

    apiKeyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/purellm-api-key";
      description = ''
        A file holding the API key clients must send (`Authorization: Bearer KEY`). It is
        handed to the service with systemd's `LoadCredential=` and read by
        `--api-key-file`, so the key is neither in the Nix store nor on the command line.
        An absolute path outside the Nix store, as a string (e.g. an agenix or sops-nix
        secret); readable by root only is enough.
      '';
    };

    environmentVariables = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        HIP_VISIBLE_DEVICES = "GPU-0e54792172da5eeb";
        PURELLM_NUM_THREADS = "8";
      };
      description = ''
        Extra environment variables for the service (they take precedence over the ones
        this module sets). Not for secrets: they end up in the Nix store.
      '';
    };

    rocmOverrideGfx = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "10.3.0";
      description = ''
        Sets `HSA_OVERRIDE_GFX_VERSION`, making ROCm treat the GPU as another gfx version
        (e.g. `"10.3.0"` for an RDNA2 card ROCm does not list). Leave it `null` for a card
        torch was compiled for, such as an MI50 with `gpuTargets = [ "gfx906" ]`.
      '';
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/purellm";
      description = ''
        The service's home and working directory: the Hugging Face cache (`HF_HOME` is
        `stateDir/huggingface`), a place for model files (`stateDir/models`), and the
        caches of torch and ROCm (MIOpen). Outside `/var/lib` it needs a static `user`.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--max-model-len"
        "16384"
        "--max-num-seqs"
        "8"
      ];
      description = "More `purellm serve` arguments, appended last (so they win).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `port` in the firewall (only useful with a non-loopback `host`).";
    };

    user = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "purellm";
      description = ''
        The user the service runs as; created if set. `null`: systemd's `DynamicUser=`.
      '';
    };

    group = mkOption {
      type = types.nullOr types.str;
      default = cfg.user;
      defaultText = literalExpression "config.services.purellm.user";
      example = "purellm";
      description = "The service's group; created if set. Only used with `user`.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion =
          cfg.apiKeyFile == null
          || (lib.hasPrefix "/" cfg.apiKeyFile && !(lib.hasPrefix "/nix/store/" cfg.apiKeyFile));
        message = "services.purellm.apiKeyFile must be an absolute path outside the Nix store (the key must not be world-readable there).";
      }
      {
        assertion = cfg.model != null || (package.hasDefaultModel or false);
        message = "services.purellm.model is unset and the package has no default model: set services.purellm.model.";
      }
      {
        assertion = stateUnderVarLib || staticUser;
        message = "services.purellm.stateDir outside /var/lib needs services.purellm.user (a DynamicUser cannot own it).";
      }
      {
        assertion = !staticUser || cfg.group != null;
        message = "services.purellm.group must be set when services.purellm.user is.";
      }
    ];

    users = lib.mkIf staticUser {
      users.${cfg.user} = {
        isSystemUser = true;
        group = cfg.group;
        home = cfg.stateDir;
        description = "purellm service user";
      };
      groups.${cfg.group} = { };
    };

    systemd.tmpfiles.rules = lib.optional (!stateUnderVarLib && staticUser) "d ${cfg.stateDir} 0750 ${cfg.user} ${cfg.group} - -";

    systemd.services.purellm = {
      description = "purellm: OpenAI-compatible LLM server";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];

      environment = {
        HOME = cfg.stateDir;
        HF_HOME = "${cfg.stateDir}/huggingface";
        # Log lines reach the journal as they are written.
        PYTHONUNBUFFERED = "1";
      }
      // lib.optionalAttrs (cfg.rocmOverrideGfx != null) {
        HSA_OVERRIDE_GFX_VERSION = cfg.rocmOverrideGfx;
      }
      // cfg.environmentVariables;

      serviceConfig =
        {
          # Readiness: Type=notify would need sd_notify in purellm; instead ExecStartPost=
          # polls /health, which answers 200 only once the model is loaded, so the unit is
          # "active" (and After= dependants start) only then. Type=exec makes a missing or
          # broken binary fail the start at once. A crash while loading fails the start.
          Type = "exec";
          ExecStart = execStart;
          ExecStartPost = "${pkgs.python3.interpreter} ${./wait-ready.py} ${healthUrl}";
          # Loading a large model (reading and dequantizing GGUF weights) can take minutes.
          TimeoutStartSec = "30min";
          Restart = "on-failure";
          RestartSec = "5s";
          RestartSteps = 5;
          RestartMaxDelaySec = "5min";

          WorkingDirectory = cfg.stateDir;
          DynamicUser = !staticUser;
          # render (/dev/dri/renderD*, /dev/kfd on NixOS) and video: the GPU device nodes.
          SupplementaryGroups = [
            "render"
            "video"
          ];

          CapabilityBoundingSet = "";
          DeviceAllow = [
            # ROCm: /dev/kfd and /dev/dri/*
            "char-drm"
            "char-kfd"
            # CUDA
            "char-nvidiactl"
            "char-nvidia-caps"
            "char-nvidia-frontend"
            "char-nvidia-uvm"
          ];
          DevicePolicy = "closed";
          LockPersonality = true;
          # Not MemoryDenyWriteExecute: PyTorch needs writable+executable memory for the
          # kernels oneDNN generates at run time on the CPU, HIP/ROCm and CUDA load GPU code
          # objects and JIT-compile kernels, and ctypes/libffi closures use it too.
          MemoryDenyWriteExecute = false;
          NoNewPrivileges = true;
          # PrivateDevices=true would hide /dev/kfd, /dev/dri and /dev/nvidia*.
          PrivateDevices = false;
          PrivateTmp = true;
          PrivateUsers = true;
          # torch reads /proc/cpuinfo and /proc/meminfo, ROCm /proc and /sys topology.
          ProcSubset = "all";
          ProtectClock = true;
          ProtectControlGroups = true;
          # A model under /home or /root is made readable; otherwise /home is hidden.
          ProtectHome = if modelInHome then "read-only" else true;
          ProtectHostname = true;
          ProtectKernelLogs = true;
          ProtectKernelModules = true;
          ProtectKernelTunables = true;
          ProtectProc = "invisible";
          ProtectSystem = "strict";
          RemoveIPC = true;
          RestrictAddressFamilies = [
            "AF_INET"
            "AF_INET6"
            "AF_UNIX"
          ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          SystemCallArchitectures = "native";
          # @resources: torch and ROCm set thread affinity and NUMA memory policy.
          SystemCallFilter = [
            "@system-service @resources"
            "~@privileged"
          ];
          # A call outside the filter fails with EPERM (which torch handles) instead of
          # killing the server with SIGSYS.
          SystemCallErrorNumber = "EPERM";
          UMask = "0077";
        }
        // lib.optionalAttrs staticUser {
          User = cfg.user;
          Group = cfg.group;
        }
        // (
          if stateUnderVarLib then
            { StateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir; }
          else
            { ReadWritePaths = [ cfg.stateDir ]; }
        )
        // lib.optionalAttrs (cfg.apiKeyFile != null) {
          LoadCredential = [ "api-key:${cfg.apiKeyFile}" ];
        };
    };

    networking.firewall = lib.mkIf cfg.openFirewall { allowedTCPPorts = [ cfg.port ]; };

    # `purellm doctor` and `purellm chat` from a shell, with the same torch as the service.
    environment.systemPackages = [ package ];
  };
}
