// The user's side of eng/package-test.sh: a fresh console app that references only the packages
// (InfLlmV2.Onnx, which brings InfLlmV2.Onnx.GraphTools, and ONNX Runtime's CPU native package).
// Usage: app ORIGINAL.onnx WORKDIR
//   1. rewrites ORIGINAL with InfLlmV2.Onnx.GraphTools into WORKDIR/rewritten/ (the per-site report on stdout);
//   2. runs the original (ORT's own attention) and the rewritten model (our op, registered with
//      RegisterInfLlmV2Ops()) on the same 32-token prompt; dense mode must agree (max |d| <= 1e-4);
//   3. writes WORKDIR/testdata/input_N.pb and output_N.pb (the rewritten model's outputs), which the
//      script hands to `infllmv2 run` so that the CLI's logits are compared with these.
//   4. chats with the rewritten model through Microsoft.Extensions.AI's IChatClient (InfLlmV2ChatClient:
//      the tokenizer and chat template copied from ORIGINAL's folder), streaming the answer;
//   5. tokenizes through ONNX Runtime Extensions: the folder's tokenizer runs as the tokenizer graphs
//      (the chat above too), and the graphs written to WORKDIR/rewritten/ run in a plain session with
//      both libraries registered in one call (RegisterAllOps), giving the same ids and the text back.
// Prints "op library: PATH" and "extensions library: PATH" (the script checks that both lie in the
// app's own folder) and "tokenizer: ..." (checked too). Exit 0 on success.
using InfLlmV2.Onnx;
using System.Text;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Text;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

if (args.Length != 2) { Console.Error.WriteLine("usage: app ORIGINAL.onnx WORKDIR"); return 2; }
string original = Path.GetFullPath(args[0]), work = Path.GetFullPath(args[1]);
string rewritten = Path.Combine(work, "rewritten", "model.infllmv2.onnx");
string testData = Path.Combine(work, "testdata");
Directory.CreateDirectory(testData);

var report = ModelRewriter.RewriteFile(original, rewritten, overwrite: true);
foreach (var line in report.Lines()) Console.WriteLine($"site {line}");
if (!report.AnyRewritten) { Console.Error.WriteLine("error: nothing rewritten"); return 3; }
Console.WriteLine($"rewritten {report.RewrittenCount}/{report.Sites.Count} -> {rewritten}");

Console.WriteLine($"op library: {NativeOpLibrary.Locate()}");
Console.WriteLine($"onnxruntime: {OrtEnv.Instance().GetVersionString()}");

const int T = 32;
using var plain = new SessionOptions();
using var withOps = new SessionOptions().RegisterInfLlmV2Ops();
using var a = new InferenceSession(original, plain);
using var b = new InferenceSession(rewritten, withOps);

var inputs = b.InputMetadata.Select(kv => (kv.Key, Value: MakeInput(kv.Key, kv.Value))).ToList();
using var runOptions = new RunOptions();
using var ra = a.Run(runOptions, inputs.Where(i => a.InputMetadata.ContainsKey(i.Key)).Select(i => i.Key).ToArray(),
    inputs.Where(i => a.InputMetadata.ContainsKey(i.Key)).Select(i => i.Value).ToArray(), a.OutputNames);
using var rb = b.Run(runOptions, inputs.Select(i => i.Key).ToArray(), inputs.Select(i => i.Value).ToArray(), b.OutputNames);

var logitsA = ra[a.OutputNames.ToList().IndexOf("logits")].GetTensorDataAsSpan<float>().ToArray();
var logitsB = rb[b.OutputNames.ToList().IndexOf("logits")].GetTensorDataAsSpan<float>().ToArray();
if (logitsA.Length != logitsB.Length || logitsA.Length == 0) { Console.Error.WriteLine("error: logits sizes differ"); return 1; }
double maxDiff = logitsA.Zip(logitsB, (x, y) => Math.Abs((double)x - y)).Max();
Console.WriteLine($"logits: {logitsB.Length} values, max |original - rewritten| = {maxDiff:G3}");
if (!(maxDiff <= 1e-4)) { Console.Error.WriteLine("error: the rewritten model disagrees with the original"); return 1; }

for (int i = 0; i < inputs.Count; i++)
    OnnxTestData.WriteTensor(OnnxTestData.FromOrtValue(inputs[i].Key, inputs[i].Value), Path.Combine(testData, $"input_{i}.pb"));
for (int i = 0; i < b.OutputNames.Count; i++)
    OnnxTestData.WriteTensor(OnnxTestData.FromOrtValue(b.OutputNames[i], rb[i]), Path.Combine(testData, $"output_{i}.pb"));
Console.WriteLine($"test data: {inputs.Count} inputs, {b.OutputNames.Count} outputs -> {testData}");
foreach (var (_, v) in inputs) v.Dispose();

// 4. A streamed chat answer through IChatClient, on the rewritten model.
var rewrittenFolder = Path.GetDirectoryName(rewritten)!;
foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
    File.Copy(Path.Combine(Path.GetDirectoryName(original)!, f), Path.Combine(rewrittenFolder, f), overwrite: true);
using (IChatClient chat = InfLlmV2ChatClient.Open(rewrittenFolder))
{
    var answer = new StringBuilder();
    int updates = 0;
    ChatFinishReason? finish = null;
    UsageDetails? usage = null;
    ChatMessage[] conversation = [new(ChatRole.System, "Be brief."), new(ChatRole.User, "Hello!")];
    await foreach (var update in chat.GetStreamingResponseAsync(conversation, new ChatOptions { MaxOutputTokens = 12 }))
    {
        answer.Append(update.Text);
        updates++;
        finish ??= update.FinishReason;
        foreach (var c in update.Contents) if (c is UsageContent u) usage = u.Details;
    }
    Console.WriteLine($"chat: {updates} streamed updates, {usage?.InputTokenCount} input and {usage?.OutputTokenCount} output tokens, finish {finish}: {answer}");
    if (updates < 2 || usage?.OutputTokenCount is not > 0 || finish is null) { Console.Error.WriteLine("error: no streamed chat answer"); return 1; }
}

// 5. Tokenization through ONNX Runtime Extensions.
Console.WriteLine($"extensions library: {ExtensionsOpLibrary.Locate()}");
var tokenizer = ModelTokenizer.ForModel(rewrittenFolder);
const string prompt = "Hello, world! héllo 🙂";
var ids = tokenizer.Encode(prompt);
var graphs = tokenizer.Graphs;
if (graphs is null) { Console.Error.WriteLine($"error: the tokenizer runs on {tokenizer.Engine}: {tokenizer.GraphsRefusal}"); return 1; }
graphs.Write(rewrittenFolder, force: true);
using (var options = new SessionOptions().RegisterAllOps())
using (var encoder = new InferenceSession(Path.Combine(rewrittenFolder, TokenizerGraphs.EncoderFile), options))
using (var decoder = new InferenceSession(Path.Combine(rewrittenFolder, TokenizerGraphs.DecoderFile), options))
{
    using var encoded = encoder.Run([NamedOnnxValue.CreateFromTensor("text", new DenseTensor<string>(new[] { prompt }, [1]))]);
    var graphIds = encoded.First().AsTensor<long>().ToArray();
    using var decoded = decoder.Run([NamedOnnxValue.CreateFromTensor("ids", new DenseTensor<long>(graphIds, [graphIds.Length]))]);
    var text = decoded.First().AsTensor<string>().Single();
    if (!graphIds.Select(i => (int)i).SequenceEqual(ids) || text != prompt || tokenizer.Decode(ids) != prompt)
    {
        Console.Error.WriteLine($"error: the tokenizer graphs disagree: [{string.Join(" ", ids)}] vs [{string.Join(" ", graphIds)}], \"{text}\"");
        return 1;
    }
}
Console.WriteLine($"tokenizer: {tokenizer.Engine} ({tokenizer.Kind}), {ids.Length} ids, graphs {TokenizerGraphs.EncoderFile}/{TokenizerGraphs.DecoderFile} agree and decode the text back");
return 0;

// A 32-token prompt with an empty cache: input_ids/position_ids/attention_mask by name, caches with
// batch 1 and past length 0 (every other symbolic dim), anything else refused.
static OrtValue MakeInput(string name, NodeMetadata meta)
{
    long[] Dims(long fill) => meta.Dimensions.Select((d, k) => d >= 0 ? d : k == 0 ? 1 : fill).Select(d => (long)d).ToArray();
    switch (name)
    {
        case "input_ids": return OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, T).Select(i => (long)((i * 37 + 11) % 256)).ToArray(), [1, T]);
        case "position_ids": return OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, T).Select(i => (long)i).ToArray(), [1, T]);
        case "attention_mask": return OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, T).ToArray(), [1, T]);
    }
    if (!name.Contains("past", StringComparison.Ordinal)) throw new InvalidOperationException($"unexpected model input {name}");
    var shape = Dims(0);
    return meta.ElementDataType switch
    {
        TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(new float[0], shape),
        TensorElementType.Float16 => OrtValue.CreateTensorValueFromMemory(new Float16[0], shape),
        var t => throw new InvalidOperationException($"unexpected cache type {t} of {name}"),
    };
}
