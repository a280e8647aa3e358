from .cli import app

if __name__ == "__main__":  # vLLM's spawned workers re-import this module: never rerun the CLI
    app(prog_name="mcts-agent")
