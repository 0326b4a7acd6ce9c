# TEST DOUBLE: NOT nixpkgs' lib.
#
# nixpkgs cannot be fetched in CI, so this file stands in for the few parts of nixpkgs' `lib`
# that flake.nix, nix/package.nix, nix/module.nix and nix/tests/*.nix use. It keeps the real
# functions' names and argument order, and the real wording of the errors the tests look for
# ("The option `x' does not exist.", "A definition for option `x' is not of type `t'."), and
# it has a small module system: options, types, mkIf / mkMerge / mkOverride, submodules, the
# unknown-option check and the type checks.
#
# It is a model, not a copy. Code that passes here may still fail against the real lib, so
# the module test takes the real one too:
#   NIXPKGS=/path/to/nixpkgs bash nix/tests/run.sh
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elem
    elemAt
    filter
    foldl'
    functionArgs
    genList
    head
    intersectAttrs
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    match
    removeAttrs
    replaceStrings
    stringLength
    substring
    tail
    typeOf
    ;

  # -- lists, attribute sets, strings ------------------------------------------------------

  id = x: x;
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: set: if cond then set else { };
  optionalString = cond: s: if cond then s else "";
  toList = x: if isList x then x else [ x ];
  last = xs: elemAt xs (length xs - 1);
  imap1 = f: xs: genList (i: f (i + 1) (elemAt xs i)) (length xs);
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  subtractLists = remove: filter (x: !(elem x remove));
  genAttrs = names: f: listToAttrs (map (name: { inherit name; value = f name; }) names);
  filterAttrs =
    pred: set:
    listToAttrs (
      concatMap (
        name:
        let
          value = set.${name};
        in
        optional (pred name value) { inherit name value; }
      ) (attrNames set)
    );
  mapAttrsToList = f: set: map (name: f name set.${name}) (attrNames set);
  attrByPath =
    path: default: set:
    if path == [ ] then
      set
    else if isAttrs set && set ? ${head path} then
      attrByPath (tail path) default set.${head path}
    else
      default;
  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
  hasSuffix =
    suffix: s:
    let
      ls = stringLength s;
      lx = stringLength suffix;
    in
    lx <= ls && substring (ls - lx) lx s == suffix;
  removePrefix =
    prefix: s: if hasPrefix prefix s then substring (stringLength prefix) (stringLength s) s else s;
  hasInfix = infix: s: match ".*${escapeRegex infix}.*" s != null;
  escapeRegex = replaceStrings regexSpecial (map (c: "\\${c}") regexSpecial);
  regexSpecial = [
    "\\"
    "["
    "]"
    "{"
    "}"
    "("
    ")"
    "^"
    "$"
    "?"
    "*"
    "+"
    "|"
    "."
  ];
  upperChars = [
    "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M"
    "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z"
  ];
  lowerChars = [
    "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m"
    "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z"
  ];
  toLower = replaceStrings upperChars lowerChars;
  concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
  escapeShellArg =
    arg:
    let
      s = toString arg;
    in
    if match "[[:alnum:],._+:@%/-]+" s == null then "'${replaceStrings [ "'" ] [ "'\\''" ] s}'" else s;
  escapeShellArgs = concatMapStringsSep " " escapeShellArg;
  boolToString = b: if b then "true" else "false";

  # -- derivations and packages -------------------------------------------------------------

  isDerivation = x: isAttrs x && (x.type or null) == "derivation";
  isStringLike = x: isString x || isPath x || (isAttrs x && (x ? outPath || x ? __toString));
  isStorePath = x: isStringLike x && hasPrefix "/nix/store/" (toString x);
  getBin = x: x.bin or x.out or x;
  getExe =
    x:
    "${getBin x}/bin/${
      x.meta.mainProgram or (throw "getExe: package ${x.name or "?"} has no meta.mainProgram")
    }";
  getExe' = x: name: "${getBin x}/bin/${name}";
  fix =
    f:
    let
      x = f x;
    in
    x;
  extends =
    overlay: f: final:
    let
      prev = f final;
    in
    prev // overlay final prev;
  composeManyExtensions = foldl' (
    acc: overlay: final: prev:
    let
      accd = acc final prev;
    in
    accd // overlay final (prev // accd)
  ) (final: prev: { });
  # As nixpkgs: the result gains `override`, which calls `f` again with changed arguments.
  makeOverridable =
    f: origArgs:
    let
      result = f origArgs;
      override =
        newArgs: makeOverridable f (origArgs // (if isFunction newArgs then newArgs origArgs else newArgs));
    in
    if isAttrs result then result // { inherit override; } else result;
  callPackageWith =
    autoArgs: fn: args:
    let
      f = if isFunction fn then fn else import fn;
    in
    makeOverridable f (intersectAttrs (functionArgs f) autoArgs // args);

  licenses = {
    asl20 = {
      spdxId = "Apache-2.0";
      shortName = "asl20";
      free = true;
    };
  };
  platforms = {
    linux = [
      "x86_64-linux"
      "aarch64-linux"
    ];
    darwin = [
      "x86_64-darwin"
      "aarch64-darwin"
    ];
  };

  # -- the module system ------------------------------------------------------------------

  showOption = concatStringsSep ".";
  showValue =
    v:
    if isString v then
      "\"${v}\""
    else if isInt v then
      toString v
    else if isBool v then
      boolToString v
    else if v == null then
      "null"
    else if isPath v then
      toString v
    else if isList v then
      "[ ${concatMapStringsSep " " showValue v} ]"
    else
      "<${typeOf v}>";
  showDefs = defs: concatStringsSep "" (map (d: "\n- In `${d.file}': ${showValue d.value}") defs);
  propType = v: if isAttrs v then v._type or null else null;

  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption =
    name:
    mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = "Whether to enable ${name}.";
    };
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };
  literalMD = text: {
    _type = "literalMD";
    inherit text;
  };
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkOptionDefault = mkOverride 1500;
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;

  isOption = x: propType x == "option";

  # mkIf / mkMerge / mkOverride around an attribute set become the same properties around
  # each of its attributes. The conditions are not evaluated here (that is what lets
  # `config = mkIf cfg.enable { ... }` read `cfg`). Gives a list of plain attribute sets.
  pushDown =
    loc: v:
    let
      t = propType v;
    in
    if t == "merge" then
      concatMap (pushDown loc) v.contents
    else if t == "if" then
      map (mapAttrs (_: mkIf v.condition)) (pushDown loc v.content)
    else if t == "override" then
      map (mapAttrs (_: mkOverride v.priority)) (pushDown loc v.content)
    else if isAttrs v then
      [ v ]
    else
      throw "A definition for `${showOption loc}' is a ${typeOf v} while an attribute set was expected.";

  # mkMerge flattens; mkIf keeps or drops (its condition must be a Boolean).
  discharge =
    v:
    let
      t = propType v;
    in
    if t == "merge" then
      concatMap discharge v.contents
    else if t == "if" then
      (
        if !isBool v.condition then
          throw "mkIf called with a non-Boolean condition"
        else if v.condition then
          discharge v.content
        else
          [ ]
      )
    else
      [ v ];
  dischargeDefs = concatMap (d: map (value: d // { inherit value; }) (discharge d.value));

  # Only the definitions with the best (lowest) priority count; plain ones have 100.
  filterOverrides =
    defs:
    let
      prio = d: if propType d.value == "override" then d.value.priority else 100;
      best = foldl' (m: d: if prio d < m then prio d else m) 9999 defs;
      strip = d: if propType d.value == "override" then d // { value = d.value.content; } else d;
    in
    map strip (filter (d: prio d == best) defs);

  mergeChecked =
    loc: type: defs:
    let
      bad = filter (d: !(type.check d.value)) defs;
    in
    if bad != [ ] then
      throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs bad}"
    else
      type.merge loc defs;

  evalOptionValue =
    loc: opt: defs:
    let
      withDefault =
        optional (opt ? default) {
          file = "the default of `${showOption loc}'";
          value = mkOptionDefault opt.default;
        }
        ++ defs;
      final = filterOverrides (dischargeDefs withDefault);
    in
    if final == [ ] then
      throw "The option `${showOption loc}' is used but not defined."
    else
      mergeChecked loc (opt.type or types.unspecified) final;

  # Options and namespaces at `loc`, given the definitions of that level.
  evalTree =
    loc: decls: defs:
    let
      pushed = concatMap (d: map (value: d // { inherit value; }) (pushDown loc d.value)) defs;
      names = unique (concatMap (d: attrNames d.value) pushed);
      unknown = filter (n: !(decls ? ${n})) names;
      defsOf = n: concatMap (d: optional (d.value ? ${n}) (d // { value = d.value.${n}; })) pushed;
      first = head unknown;
      values = mapAttrs (
        n: decl:
        if isOption decl then
          evalOptionValue (loc ++ [ n ]) decl (defsOf n)
        else
          evalTree (loc ++ [ n ]) decl (defsOf n)
      ) decls;
    in
    if unknown != [ ] then
      throw "The option `${showOption (loc ++ [ first ])}' does not exist. Definition values:${
        showDefs (defsOf first)
      }"
    else
      values;

  mergeDecls =
    loc: a: b:
    a
    // mapAttrs (
      n: v:
      if !(a ? ${n}) then
        v
      else if isOption v || isOption a.${n} then
        throw "The option `${showOption (loc ++ [ n ])}' is declared more than once."
      else
        mergeDecls (loc ++ [ n ]) a.${n} v
    ) b;

  evalModules =
    {
      modules,
      specialArgs ? { },
      prefix ? [ ],
    }:
    let
      args = {
        inherit lib config options specialArgs;
      }
      // specialArgs;
      load =
        file: m:
        if isPath m || isString m then
          load (toString m) (import m)
        else if isFunction m then
          load file (m args)
        else if isAttrs m then
          let
            structured = m ? config || m ? options;
            here = m._file or file;
          in
          [
            {
              file = here;
              options = m.options or { };
              config =
                if structured then
                  m.config or { }
                else
                  removeAttrs m [
                    "imports"
                    "_file"
                    "key"
                    "meta"
                    "disabledModules"
                  ];
            }
          ]
          ++ concatMap (load here) (m.imports or [ ])
        else
          throw "A module must be a path, a function or an attribute set; got a ${typeOf m} in ${file}.";
      loaded = concatMap (load "<evalModules>") modules;
      options = foldl' (mergeDecls prefix) { } (map (m: m.options) loaded);
      config = evalTree prefix options (
        map (m: {
          inherit (m) file;
          value = m.config;
        }) loaded
      );
    in
    {
      inherit config options;
    };

  mkOptionType =
    attrs:
    {
      _type = "option-type";
      description = attrs.name;
      check = _: true;
      merge = mergeDefaultOption;
    }
    // attrs;

  mergeEqualOption =
    loc: defs:
    let
      first = head defs;
    in
    foldl' (
      acc: d:
      if d.value == first.value then
        acc
      else
        throw "The option `${showOption loc}' has conflicting definition values:${showDefs defs}"
    ) first.value (tail defs);
  mergeOneOption =
    loc: defs:
    if length defs == 1 then
      (head defs).value
    else
      throw "The unique option `${showOption loc}' is defined multiple times. Definition values:${showDefs defs}";
  mergeDefaultOption =
    loc: defs:
    let
      values = map (d: d.value) defs;
    in
    if length defs == 1 then
      head values
    else if all isList values then
      concatLists values
    else if all isAttrs values then
      foldl' (a: b: a // b) { } values
    else if all isBool values then
      any id values
    else
      mergeEqualOption loc defs;

  types = rec {
    unspecified = mkOptionType { name = "unspecified"; };
    raw = mkOptionType {
      name = "raw";
      merge = mergeOneOption;
    };
    anything = mkOptionType {
      name = "anything";
      merge =
        loc: defs:
        if all (d: isAttrs d.value && !(isDerivation d.value)) defs then
          (attrsOf anything).merge loc defs
        else if length defs == 1 then
          (head defs).value
        else
          mergeEqualOption loc defs;
    };
    bool = mkOptionType {
      name = "bool";
      description = "boolean";
      check = isBool;
      merge = mergeEqualOption;
    };
    int = mkOptionType {
      name = "int";
      description = "signed integer";
      check = isInt;
      merge = mergeEqualOption;
    };
    port = ints.u16;
    ints = {
      u16 = mkOptionType {
        name = "u16";
        description = "16 bit unsigned integer; between 0 and 65535 (both inclusive)";
        check = x: isInt x && x >= 0 && x <= 65535;
        merge = mergeEqualOption;
      };
      positive = mkOptionType {
        name = "positiveInt";
        description = "positive integer, meaning >0";
        check = x: isInt x && x > 0;
        merge = mergeEqualOption;
      };
    };
    str = mkOptionType {
      name = "str";
      description = "string";
      check = isString;
      merge = mergeEqualOption;
    };
    nonEmptyStr = mkOptionType {
      name = "nonEmptyStr";
      description = "non-empty string";
      check = x: isString x && match "[[:space:]]*" x == null;
      merge = mergeEqualOption;
    };
    path = mkOptionType {
      name = "path";
      check = x: isStringLike x && substring 0 1 (toString x) == "/";
      merge = mergeEqualOption;
    };
    package = mkOptionType {
      name = "package";
      check = x: isDerivation x || isStorePath x;
      merge = mergeOneOption;
    };
    attrs = mkOptionType {
      name = "attrs";
      description = "attribute set";
      check = isAttrs;
      merge = loc: foldl' (acc: d: acc // d.value) { };
    };
    enum =
      values:
      mkOptionType {
        name = "enum";
        description = "one of ${concatMapStringsSep ", " showValue values}";
        check = x: elem x values;
        merge = mergeEqualOption;
      };
    nullOr =
      t:
      mkOptionType {
        name = "nullOr";
        description = "null or ${t.description}";
        check = x: x == null || t.check x;
        merge =
          loc: defs:
          let
            nulls = filter (d: d.value == null) defs;
          in
          if length nulls == length defs then
            null
          else if nulls == [ ] then
            t.merge loc defs
          else
            throw "The option `${showOption loc}' is defined both null and not null:${showDefs defs}";
      };
    either =
      a: b:
      mkOptionType {
        name = "either";
        description = "${a.description} or ${b.description}";
        check = x: a.check x || b.check x;
        merge =
          loc: defs:
          if all (d: a.check d.value) defs then
            a.merge loc defs
          else if all (d: b.check d.value) defs then
            b.merge loc defs
          else
            mergeOneOption loc defs;
      };
    oneOf = ts: foldl' either (head ts) (tail ts);
    listOf =
      t:
      mkOptionType {
        name = "listOf";
        description = "list of ${t.description}";
        check = isList;
        merge =
          loc: defs:
          concatLists (
            imap1 (
              n: d:
              imap1 (
                m: x:
                mergeChecked (loc ++ [ "[definition ${toString n}-entry ${toString m}]" ]) t [
                  (d // { value = x; })
                ]
              ) d.value
            ) defs
          );
      };
    attrsOf =
      t:
      mkOptionType {
        name = "attrsOf";
        description = "attribute set of ${t.description}";
        check = isAttrs;
        merge =
          loc: defs:
          let
            pushed = concatMap (d: map (value: d // { inherit value; }) (pushDown loc d.value)) defs;
            names = unique (concatMap (d: attrNames d.value) pushed);
            defsOf =
              n:
              filterOverrides (
                dischargeDefs (concatMap (d: optional (d.value ? ${n}) (d // { value = d.value.${n}; })) pushed)
              );
          in
          listToAttrs (
            concatMap (
              n:
              let
                ds = defsOf n;
              in
              optional (ds != [ ]) {
                name = n;
                value = mergeChecked (loc ++ [ n ]) t ds;
              }
            ) names
          );
      };
    submodule =
      modules:
      mkOptionType {
        name = "submodule";
        check = x: isAttrs x || isFunction x || isPath x;
        merge =
          loc: defs:
          (evalModules {
            modules =
              toList modules
              ++ map (d: {
                _file = d.file;
                imports = [ d.value ];
              }) defs;
            prefix = loc;
            specialArgs = {
              name = last loc;
            };
          }).config;
      };
  };

  lib = {
    inherit
      all
      any
      attrByPath
      attrNames
      boolToString
      callPackageWith
      composeManyExtensions
      concatLists
      concatMap
      concatMapStringsSep
      concatStringsSep
      elem
      escapeRegex
      escapeShellArg
      escapeShellArgs
      evalModules
      extends
      filter
      filterAttrs
      fix
      foldl'
      genAttrs
      getBin
      getExe
      getExe'
      hasInfix
      hasPrefix
      hasSuffix
      head
      id
      imap1
      isDerivation
      isStorePath
      isStringLike
      last
      length
      licenses
      listToAttrs
      literalExpression
      literalMD
      makeOverridable
      mapAttrs
      mapAttrsToList
      mergeEqualOption
      mergeOneOption
      mkDefault
      mkEnableOption
      mkForce
      mkIf
      mkMerge
      mkOption
      mkOptionDefault
      mkOptionType
      mkOverride
      optional
      optionalAttrs
      optionals
      optionalString
      platforms
      removePrefix
      replaceStrings
      showOption
      subtractLists
      tail
      toList
      toLower
      types
      unique
      ;
    # Marks this lib as the test double (the tests print which lib they ran against).
    isTestDouble = true;
  };
in
lib
