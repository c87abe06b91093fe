"""The seam between the agent loop and the tools it calls."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolOutput:
    """What a tool gives back to the model: text, and whether it is an error."""

    text: str
    is_error: bool = False


class ToolRunner(Protocol):
    """Runs one tool call of the model (bash or the text editor) inside the sandbox."""

    async def run_tool(self, name: str, tool_input: Mapping[str, Any]) -> ToolOutput: ...
