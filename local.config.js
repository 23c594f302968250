// pm2 processes for the embedded local network (see docs/local.md):
//   .venv/bin/python scripts/local_subnet.py --dir localnet --steps 0   # create the network once, or any demo run
//   pm2 start local.config.js && pm2 logs
// Two miners keep training and publishing (different seeds and budgets, so they publish different
// models; the first publication comes after one short epoch, a few minutes on 2 CPU cores); a validator
// keeps scoring them and setting weights. The leaderboard is written to localnet/validator/leaderboard.html
// (and summary.json beside it) and served read-only at http://127.0.0.1:8765/.
const net = "localnet";
const py = ".venv/bin/python";
const miner = (name, seed, samples) => ({
  name: `local-${name}`,
  script: "neurons/miner.py",
  interpreter: py,
  args: `--localnet ${net} --wallet.name ${name} --hf_repo_id ${name}/tiny --model_dir ${net}/miners/${name} --num_epochs -1 --seed ${seed} --samples_per_epoch ${samples} --sequence_length 128 --eval_samples 64 --device cpu --wandb.off`,
  autorestart: false,
});
module.exports = {
  apps: [
    miner("miner1", 1, 256),
    miner("miner2", 2, 512),
    {
      name: "local-validator",
      script: "neurons/validator.py",
      interpreter: py,
      args: `--localnet ${net} --wallet.name validator --device cpu --wandb.off --state_dir ${net}/validator/state --model_dir ${net}/validator/models --leaderboard ${net}/validator/leaderboard.html --leaderboard.port 8765 --blocks_per_epoch 20 --weights_check_seconds 10 --update_delay_minutes 0.5 --samples_per_step 64`,
      autorestart: true,
      restart_delay: 5000,
    },
  ],
};
