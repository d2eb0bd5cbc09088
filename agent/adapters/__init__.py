"""The rule tool in the forms that agent stacks take: OpenAI tool calls, LangChain, MCP and TRL.

Each adapter renders the tool from `rule_service.tool` and runs it through a
`RuleBackend`, so every form returns the same text for the same arguments.
"""
