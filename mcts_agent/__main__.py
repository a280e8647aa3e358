from .cli import app

app(prog_name="mcts-agent")
