"""Experiment (issue 18), not part of textfit: BERT's classification head on the mean of the last hidden
states instead of the [CLS] token's pooler output, the pooling the packaged all-MiniLM-L6-v2 was trained with.

    EXP_POOL=mean PYTHONPATH=src:benchmarks/experiments python benchmarks/sweep.py mrpc --seeds 1,2,3 \
        --recipe "" --log /tmp/mrpc-meanpool.jsonl

Python imports this file at start-up when its folder is on PYTHONPATH; with EXP_POOL=mean it replaces
`BertForSequenceClassification.forward` in every process the sweep starts (train and eval). Measured in
benchmarks/RESULTS.md ("Recipe sweeps"): no gain over the [CLS] head, so textfit keeps the standard head,
whose saved folders `transformers.pipeline` loads without custom code.
"""

import os

if os.environ.get("EXP_POOL") == "mean":
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput
    from transformers.models.bert import modeling_bert

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kw):
        kw.pop("return_dict", None)
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kw)[0]
        if attention_mask is None:
            pooled = h.mean(1)
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    modeling_bert.BertForSequenceClassification.forward = forward
