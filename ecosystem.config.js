// pm2 processes for a validator and a miner on the real network:
//   pm2 start ecosystem.config.js --only finetune-validator
// Edit the wallet names, the Hugging Face repository and the devices first. For the embedded local
// network see docs/local.md (local.config.js).
module.exports = {
  apps: [
    {
      name: "finetune-validator",
      script: "neurons/validator.py",
      interpreter: ".venv/bin/python",
      args: "--wallet.name validator --wallet.hotkey default --device cuda:0",
      autorestart: true,
      max_restarts: 50,
      restart_delay: 10000,
      kill_timeout: 30000,
    },
    {
      name: "finetune-miner",
      script: "neurons/miner.py",
      interpreter: ".venv/bin/python",
      args: "--wallet.name miner --wallet.hotkey default --hf_repo_id YOUR_NAMESPACE/finetune --competition_id l3 --device cuda:0",
      autorestart: true,
      restart_delay: 10000,
    },
  ],
};
