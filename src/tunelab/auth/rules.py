"""What every endpoint needs: one table, keyed by the endpoint's route name.

``key``: whether an API key may call it (else 403 "Request had insufficient authentication
scopes.", as the Gemini API answers an API key on tuning calls). ``scopes``: an OAuth token
needs one of them (``cloud-platform`` always does). ``role``: the caller's least role on the
tuned model named in the path (none → 404 as if it did not exist; too low → 403).

A route missing from the table gets ``STRICTEST`` (fail closed); a test checks that every
route is listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.auth.scopes import GL, RETRIEVER, RETRIEVER_RO, TUNING, TUNING_RO

READER, WRITER, OWNER = "READER", "WRITER", "OWNER"
ROLE_RANK = {READER: 1, WRITER: 2, OWNER: 3}


@dataclass(frozen=True)
class Rule:
    key: bool
    scopes: frozenset[str]
    role: str | None = None
    what: str = ""


def _r(key: bool, scopes: tuple[str, ...], role: str | None, what: str) -> Rule:
    return Rule(key, frozenset(scopes), role, what)


_USE = (GL, TUNING, TUNING_RO)
_READ_TUNED = (TUNING, TUNING_RO)
_WRITE_TUNED = (TUNING,)
_SHARE_READ = (GL, TUNING, TUNING_RO, RETRIEVER, RETRIEVER_RO)
_SHARE_WRITE = (GL, TUNING, RETRIEVER)

RULES: dict[str, Rule] = {
    # base models
    "list_models": _r(True, _USE, None, "list base models"),
    "get_model": _r(True, _USE, None, "get a base model"),
    "models.generateContent": _r(True, _USE, None, "generate with a base model"),
    "models.streamGenerateContent": _r(True, _USE, None, "stream with a base model"),
    "models.countTokens": _r(True, _USE, None, "count tokens (base model)"),
    # tuned models: reading and calling
    "list_tuned_models": _r(True, _READ_TUNED, None, "list tuned models you may read"),
    "get_tuned_model": _r(True, _READ_TUNED, READER, "get a tuned model"),
    "list_operations": _r(True, _READ_TUNED, READER, "list a model's operations"),
    "get_operation": _r(True, _READ_TUNED, READER, "poll an operation"),
    "tunedModels.generateContent": _r(True, _USE, READER, "generate with a tuned model"),
    "tunedModels.streamGenerateContent": _r(True, _USE, READER, "stream with a tuned model"),
    "tunedModels.countTokens": _r(True, _USE, READER, "count tokens (tuned model)"),
    # epochs of a run (tunelab extension, api/gemini/epochs.py)
    "get_epochs": _r(True, _READ_TUNED, READER, "per-epoch losses and advice"),
    "select_epoch": _r(False, _WRITE_TUNED, WRITER, "serve an earlier epoch"),
    # scoring models on test examples (tunelab extension, api/gemini/evaluations.py): calls
    # the models, so it needs what generateContent needs on each
    "evaluate_tuned_model": _r(True, _USE, READER, "score models on test examples"),
    # export and import (tunelab extension, api/export.py): taking the weights is more than
    # calling the model, so a READER cannot, nor can an API key
    "export_tuned_model": _r(False, _READ_TUNED, WRITER, "download the weights"),
    "import_tuned_model": _r(False, _WRITE_TUNED, None, "import a LoRA adapter"),
    # tuning: OAuth with the tuning scope only
    "create_tuned_model": _r(False, _WRITE_TUNED, None, "create (tune) a model"),
    "update_tuned_model": _r(False, _WRITE_TUNED, WRITER, "patch a tuned model"),
    "delete_tuned_model": _r(False, _WRITE_TUNED, OWNER, "delete a tuned model"),
    "cancel_tuned_model": _r(False, _WRITE_TUNED, WRITER, "cancel tuning (:cancel)"),
    "cancel_operation": _r(False, _WRITE_TUNED, WRITER, "cancel an operation"),
    # Vertex AI's tuning jobs (api/vertex/): the same models, so the same rules
    "vertex.createTuningJob": _r(False, _WRITE_TUNED, None, "create a tuning job"),
    "vertex.listTuningJobs": _r(True, _READ_TUNED, None, "list tuning jobs you may read"),
    "vertex.getTuningJob": _r(True, _READ_TUNED, READER, "get a tuning job"),
    "vertex.cancelTuningJob": _r(False, _WRITE_TUNED, WRITER, "cancel a tuning job"),
    "vertex.endpoints.generateContent": _r(True, _USE, READER, "generate (tuned endpoint)"),
    "vertex.endpoints.streamGenerateContent": _r(True, _USE, READER, "stream (tuned endpoint)"),
    "vertex.endpoints.countTokens": _r(True, _USE, READER, "count tokens (tuned endpoint)"),
    # permissions (sharing)
    "list_permissions": _r(False, _SHARE_READ, WRITER, "list a model's permissions"),
    "get_permission": _r(False, _SHARE_READ, WRITER, "get a permission"),
    "get_own_permission": _r(True, _SHARE_READ, READER, "your own role on a model (extension)"),
    "create_permission": _r(False, _SHARE_WRITE, WRITER, "share a model"),
    "update_permission": _r(False, _SHARE_WRITE, WRITER, "change a permission's role"),
    "delete_permission": _r(False, _SHARE_WRITE, WRITER, "remove a permission"),
    "transfer_ownership": _r(False, _SHARE_WRITE, OWNER, "transfer ownership"),
    # training data files (tunelab extension)
    "upload_file": _r(False, _WRITE_TUNED, None, "upload training data"),
    "list_files": _r(True, _READ_TUNED, None, "list your files"),
    "get_file": _r(True, _READ_TUNED, None, "get a file"),
    "delete_file": _r(False, _WRITE_TUNED, None, "delete a file"),
    # the Studio's table: a dataset parsed and checked as an upload, nothing stored
    # (studio/preview.py); what reading tuned models needs, and no API key, as uploads
    "preview_dataset": _r(False, _READ_TUNED, None, "preview a dataset (Studio)"),
    # API keys of the caller's own account (tunelab extension, api/keys.py)
    "list_api_keys": _r(False, _WRITE_TUNED, None, "list your API keys"),
    "create_api_key": _r(False, _WRITE_TUNED, None, "create an API key"),
    "delete_api_key": _r(False, _WRITE_TUNED, None, "revoke an API key"),
    # the caller's own account (tunelab extension, api/account.py)
    "change_password": _r(False, _WRITE_TUNED, None, "change your own password"),
}
STRICTEST = Rule(False, frozenset({TUNING}), OWNER, "unlisted endpoint")


def rule_named(route_name: str | None) -> Rule:
    """The rule of the endpoint with this route name; ``STRICTEST`` for one not listed."""
    return RULES.get(route_name or "", STRICTEST)
