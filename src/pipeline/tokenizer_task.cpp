#include "tessera/pipeline/tokenizer_task.h"

#include <ATen/ATen.h>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {

TokenizerTask::TokenizerTask(Tokenizer& tokenizer, at::Tensor images,
                             ReconstructionLoss reconstruction_loss)
    : tokenizer_(tokenizer), images_(std::move(images)), reconstruction_loss_(reconstruction_loss) {
  TESSERA_CHECK(images_.defined() && images_.dim() == 4 && images_.size(0) > 0,
                "TokenizerTask: expected images [N, C, H, W] with N > 0");
  (void)tokenizer_.token_grids(images_.size(2), images_.size(3));  // fails early on a bad size
  const std::vector<at::Tensor> trainable = tokenizer_.parameters();
  for (const auto& [name, tensor] : tokenizer_.state_dict()) {
    bool is_parameter = false;
    for (const auto& p : trainable) is_parameter = is_parameter || p.is_same(tensor);
    (is_parameter ? parameters_ : buffers_)[name] = tensor;
  }
  TESSERA_CHECK(parameters_.size() == trainable.size(),
                "TokenizerTask: found {} of the tokenizer's {} parameters in its state dict",
                parameters_.size(), trainable.size());
}

TrainingLoss TokenizerTask::loss(const at::Tensor& indices, at::Generator& /*generator*/) {
  const at::Tensor batch = images_.index_select(0, indices).to(tokenizer_.device());
  TokenizerTrainingOutput out = tokenizer_.training_forward(batch);
  const at::Tensor reconstruction = reconstruction_loss_ == ReconstructionLoss::mse
                                        ? at::mse_loss(out.reconstruction, batch)
                                        : at::l1_loss(out.reconstruction, batch);
  TrainingLoss result;
  result.loss = out.regularization.defined() ? reconstruction + out.regularization : reconstruction;
  result.terms.emplace_back("recon", reconstruction.item<double>());
  for (auto& term : out.terms) result.terms.push_back(std::move(term));
  return result;
}

std::map<std::string, std::string> TokenizerTask::metadata() const {
  return {{kTokenizerConfigMetadataKey, config_to_json(tokenizer_.config()).dump()}};
}

}  // namespace tessera
