// pm2 processes for the embedded local network (see docs/local.md):
//   .venv/bin/python scripts/local_subnet.py --dir localnet --steps 0   # create the network once, or any demo run
//   pm2 start local.config.js && pm2 logs
// Two miners keep training and publishing; a validator keeps scoring them and setting weights.
const net = "localnet";
const py = ".venv/bin/python";
const miner = (name, epochs) => ({
  name: `local-${name}`,
  script: "neurons/miner.py",
  interpreter: py,
  args: `--localnet ${net} --wallet.name ${name} --hf_repo_id ${name}/tiny --model_dir ${net}/miners/${name} --num_epochs ${epochs} --wandb.off`,
  autorestart: false,
});
module.exports = {
  apps: [
    miner("miner1", -1),
    miner("miner2", -1),
    {
      name: "local-validator",
      script: "neurons/validator.py",
      interpreter: py,
      args: `--localnet ${net} --wallet.name validator --device cpu --wandb.off --state_dir ${net}/validator/state --model_dir ${net}/validator/models --min_model_age_blocks 0 --blocks_per_epoch 20 --weights_check_seconds 10 --update_delay_minutes 0.5`,
      autorestart: true,
      restart_delay: 5000,
    },
  ],
};
