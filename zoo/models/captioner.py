"""The CNN-LSTM captioner with yunjey/pytorch-tutorial's module tree and names, so the
tutorial's ``EncoderCNN`` / ``DecoderRNN`` state dicts load as they are (under ``encoder.`` /
``decoder.``): ``EncoderCNN`` = ``resnet`` (the zoo's ResNet's children but ``fc``, as
``nn.Sequential``), ``linear``, ``bn`` (``BatchNorm1d(embed, momentum=0.01)``); ``DecoderRNN``
= ``embed``, ``lstm`` (``nn.LSTM``, batch first), ``linear``. The forward packs as the tutorial
(``pack_padded_sequence``), ``sample`` decodes greedily."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from zoo.families.captioner import CaptionerConfig
from zoo.models.resnet import ResNet
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = ["Captioner", "DecoderRNN", "EncoderCNN"]


class EncoderCNN(nn.Module):
    """images (B, C, H, W) -> features (B, embed_size). The ResNet runs without gradients (the
    tutorial trains only ``linear`` and ``bn``); its BatchNorms follow the module's mode, as
    there."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        resnet = ResNet(config.resnet)
        self.resnet = nn.Sequential(*list(resnet.children())[:-1])  # without fc
        self.linear = nn.Linear(config.num_features, config.embed_size)
        self.bn = nn.BatchNorm1d(config.embed_size, momentum=0.01)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.resnet(images)
        features = features.reshape(features.size(0), -1)
        return self.bn(self.linear(features))


class DecoderRNN(nn.Module):
    """features (B, E), captions (B, T), lengths -> packed logits (sum(lengths), V)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        self.lstm = nn.LSTM(
            config.embed_size, config.hidden_size, config.num_layers, batch_first=True
        )
        self.linear = nn.Linear(config.hidden_size, config.vocab_size)
        self.max_seg_length = config.max_seg_length

    def forward(
        self, features: torch.Tensor, captions: torch.Tensor, lengths: Sequence[int]
    ) -> torch.Tensor:
        embeddings = self.embed(captions)
        embeddings = torch.cat((features.unsqueeze(1), embeddings), 1)
        packed = pack_padded_sequence(embeddings, list(lengths), batch_first=True)
        hiddens, _ = self.lstm(packed)
        return self.linear(hiddens[0])

    def greedy(self, features: torch.Tensor, states=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The tutorial's ``sample`` loop: token ids (B, max_seg_length) and each step's logits
        (B, max_seg_length, V)."""
        sampled_ids, logits = [], []
        inputs = features.unsqueeze(1)
        for _ in range(self.max_seg_length):
            hiddens, states = self.lstm(inputs, states)  # (B, 1, H)
            outputs = self.linear(hiddens.squeeze(1))  # (B, V)
            predicted = outputs.max(1)[1]
            sampled_ids.append(predicted)
            logits.append(outputs)
            inputs = self.embed(predicted).unsqueeze(1)  # (B, 1, E)
        return torch.stack(sampled_ids, 1), torch.stack(logits, 1)

    def sample(self, features: torch.Tensor, states=None) -> torch.Tensor:
        """Greedy token ids (B, max_seg_length)."""
        return self.greedy(features, states)[0]


@register_model("captioner", "torch")
class Captioner(nn.Module):
    """``encoder`` + ``decoder``. ``forward(images, captions, lengths=None)``: the tutorial's
    training forward, packed logits (sum(lengths), V) (lengths default: every caption's full
    length T); ``sample(images)``: greedy ids (B, max_seg_length)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = EncoderCNN(config)
        self.decoder = DecoderRNN(config)

    def forward(
        self, images: torch.Tensor, captions: torch.Tensor, lengths: Sequence[int] | None = None
    ) -> torch.Tensor:
        check_inputs(self, "torch", images, captions)
        if lengths is None:
            lengths = [captions.shape[1]] * captions.shape[0]
        return self.decoder(self.encoder(images), captions.long(), lengths)

    def greedy(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy ids and each step's logits (``DecoderRNN.greedy``)."""
        return self.decoder.greedy(self.encoder(images))

    def sample(self, images: torch.Tensor) -> torch.Tensor:
        return self.greedy(images)[0]
