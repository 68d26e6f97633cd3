using System.Globalization;
using System.Text;
using System.Text.Json;

namespace InfLlmV2.Onnx.Text;

/// <summary>One message of a conversation.</summary>
/// <param name="Role">"system", "user" or "assistant".</param>
/// <param name="Content">Its text.</param>
public sealed record ChatTurn(string Role, string Content);

/// <summary>
/// A model's chat template (Jinja, as in <c>tokenizer_config.json</c>'s <c>chat_template</c>, the
/// same source onnxruntime-genai's <c>ApplyChatTemplate</c> reads) rendered by a small Jinja subset:
/// text, <c>{{ expr }}</c>, <c>{% for x in list %}</c> (with <c>loop.first</c>, <c>loop.last</c>,
/// <c>loop.index</c>, <c>loop.index0</c>, <c>loop.length</c>), <c>{% if %}/{% elif %}/{% else %}</c>,
/// <c>{% set name = expr %}</c>, comments, whitespace control (<c>{%-</c>, <c>-%}</c>), string
/// and number literals, <c>[a, b]</c>, <c>x.attr</c>, <c>x['key']</c>, <c>x[i]</c>, <c>+</c> and
/// <c>~</c> concatenation, <c>== != &lt; &gt; &lt;= &gt;=</c>, <c>in</c>, <c>not in</c>, <c>and or not</c>,
/// <c>is [not] defined/none/string</c>, the filters <c>trim</c>, <c>length</c>, <c>upper</c>,
/// <c>lower</c>, <c>string</c> and <c>tojson</c>, the method <c>strip()</c>, and <c>raise_exception(msg)</c>.
/// Anything else (macros, slices, namespaces, other filters) is refused with
/// <see cref="NotSupportedException"/> naming it: a template is rendered exactly or not at all.
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>Largest template accepted, in characters.</summary>
    public const int MaxLength = 256 * 1024;

    /// <summary>Most output characters a rendering may produce, and the longest string or list a value may be.</summary>
    public const int MaxOutput = 16 << 20;

    /// <summary>Most nodes a rendering may visit (real templates visit a few per message).</summary>
    public const int MaxSteps = 2_000_000;

    /// <summary>Deepest nesting of blocks or of expressions.</summary>
    public const int MaxNesting = 64;

    private readonly List<Node> _nodes;

    private ChatTemplate(string source, List<Node> nodes, string? bos, string? eos, string origin)
    {
        Source = source;
        _nodes = nodes;
        BosToken = bos;
        EosToken = eos;
        Origin = origin;
    }

    /// <summary>The template text.</summary>
    public string Source { get; }

    /// <summary>Where the template came from (a file and field).</summary>
    public string Origin { get; }

    /// <summary>The <c>bos_token</c> the template sees (tokenizer_config.json), or null.</summary>
    public string? BosToken { get; }

    /// <summary>The <c>eos_token</c> the template sees, or null.</summary>
    public string? EosToken { get; }

    /// <summary>Parses a template.</summary>
    /// <exception cref="NotSupportedException">It uses Jinja this renderer does not implement (named).</exception>
    /// <exception cref="InvalidDataException">It is not a well-formed template.</exception>
    public static ChatTemplate Parse(string source, string? bosToken = null, string? eosToken = null, string origin = "chat template")
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.Length > MaxLength) throw new InvalidDataException($"{origin}: {source.Length} characters, more than {MaxLength}");
        var parser = new Parser(Lex(source, origin), origin);
        var nodes = parser.Block(out var end);
        if (end is not null) throw new InvalidDataException($"{origin}: unexpected {{% {end} %}}");
        return new ChatTemplate(source, nodes, bosToken, eosToken, origin);
    }

    /// <summary>
    /// The chat template of a model folder: <c>chat_template</c> of <c>tokenizer_config.json</c> (a
    /// string, or a list of named templates: "default"), else the file <c>chat_template.jinja</c>;
    /// null when the folder has neither.
    /// </summary>
    public static ChatTemplate? ForFolder(string folder)
    {
        string? bos = null, eos = null, text = null, origin = "";
        var configPath = Path.Combine(folder, ModelFolder.TokenizerConfigFile);
        if (GraphTools.SafeFiles.Kind(configPath, followLinks: false) != GraphTools.FileKind.Missing)
        {
            using var doc = ModelFolder.ReadJson(folder, ModelFolder.TokenizerConfigFile);
            var root = doc.RootElement;
            bos = TokenText(root, "bos_token", configPath);
            eos = TokenText(root, "eos_token", configPath);
            if (root.TryGetProperty("chat_template", out var t) && t.ValueKind != JsonValueKind.Null)
            {
                origin = $"{configPath}: chat_template";
                if (t.ValueKind == JsonValueKind.String) text = t.GetString();
                else if (t.ValueKind == JsonValueKind.Array)
                {
                    foreach (var named in t.EnumerateArray())
                        if (named.ValueKind == JsonValueKind.Object && named.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String
                            && n.GetString() == "default" && named.TryGetProperty("template", out var tt) && tt.ValueKind == JsonValueKind.String)
                            text = tt.GetString();
                    if (text is null) throw new InvalidDataException($"{origin} lists no template named \"default\"");
                }
                else throw new InvalidDataException($"{origin} must be a string or a list of {{name, template}}");
            }
        }
        if (text is null && GraphTools.SafeFiles.Kind(Path.Combine(folder, "chat_template.jinja"), followLinks: false) != GraphTools.FileKind.Missing)
        {
            var (real, _) = GraphTools.SafeFiles.RegularFileInside(folder, "chat_template.jinja", Path.Combine(folder, "chat_template.jinja"));
            text = GraphTools.SafeFiles.ReadTextBounded(real, "chat template", MaxLength * 4L);
            origin = Path.Combine(folder, "chat_template.jinja");
        }
        return text is null ? null : Parse(text, bos, eos, origin);
    }

    private static string? TokenText(JsonElement root, string name, string file)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String) return c.GetString();
        throw new InvalidDataException($"{file}: {name} must be a string or an object with a string content");
    }

    /// <summary>Renders the conversation.</summary>
    /// <param name="messages">The messages, in order.</param>
    /// <param name="addGenerationPrompt">Whether to end with the header of the assistant's turn.</param>
    /// <exception cref="NotSupportedException">The rendering reached Jinja this renderer does not implement.</exception>
    /// <exception cref="InvalidDataException">The template raised an exception (its message) or failed.</exception>
    public string Render(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt = true)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = BosToken ?? "",
            ["eos_token"] = EosToken ?? "",
        };
        var output = new StringBuilder();
        new Renderer(Origin, output).Run(_nodes, [vars]);
        return output.ToString();
    }

    // ---------------------------------------------------------------- lexer

    private enum T { Text, Expr, Stmt }

    private sealed record Tok(T Kind, string Body, int Line);

    private static List<Tok> Lex(string s, string origin)
    {
        var toks = new List<Tok>();
        int pos = 0, line = 1;
        bool trimNext = false, afterBlock = false;
        while (pos < s.Length)
        {
            int open = IndexOfOpen(s, pos);
            var text = open < 0 ? s[pos..] : s[pos..open];
            if (trimNext) text = text.TrimStart();
            // trim_blocks (as Hugging Face renders templates): the first newline after a block tag goes.
            if (afterBlock && text.StartsWith('\n')) text = text[1..];
            else if (afterBlock && text.StartsWith("\r\n", StringComparison.Ordinal)) text = text[2..];
            if (open >= 0 && s.Length > open + 2 && s[open + 2] == '-') text = text.TrimEnd();
            else if (open >= 0 && s[open + 1] is '%' or '#' && !(s.Length > open + 2 && s[open + 2] == '+'))
            {
                // lstrip_blocks: spaces and tabs from the start of the line to a block tag go.
                int nl = text.LastIndexOf('\n');
                if ((nl >= 0 || pos == 0) && text.AsSpan(nl + 1).Trim(" \t").IsEmpty) text = text[..(nl + 1)];
            }
            if (text.Length > 0) toks.Add(new Tok(T.Text, text, line));
            line += Count(s, pos, open < 0 ? s.Length : open);
            if (open < 0) break;
            char kind = s[open + 1];
            string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
            int end = s.IndexOf(close, open + 2, StringComparison.Ordinal);
            if (end < 0) throw new InvalidDataException($"{origin}: line {line}: '{{{kind}' is never closed");
            int bodyStart = open + 2, bodyEnd = end;
            if (bodyStart < bodyEnd && s[bodyStart] is '-' or '+') bodyStart++;
            afterBlock = kind != '{';
            trimNext = bodyEnd > bodyStart && s[bodyEnd - 1] == '-';
            if (trimNext) bodyEnd--;
            if (kind != '#') toks.Add(new Tok(kind == '{' ? T.Expr : T.Stmt, s[bodyStart..bodyEnd].Trim(), line));
            line += Count(s, open, end);
            pos = end + 2;
        }
        return toks;
    }

    private static int IndexOfOpen(string s, int from)
    {
        for (int i = s.IndexOf('{', from); i >= 0 && i + 1 < s.Length; i = s.IndexOf('{', i + 1))
            if (s[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    private static int Count(string s, int from, int to)
    {
        int n = 0;
        for (int i = from; i < to; i++) if (s[i] == '\n') n++;
        return n;
    }

    // ---------------------------------------------------------------- syntax tree

    private abstract record Node(int Line);

    private sealed record TextNode(string Text, int Line) : Node(Line);

    private sealed record OutputNode(Expr Value, int Line) : Node(Line);

    private sealed record IfNode(List<(Expr? Cond, List<Node> Body)> Branches, int Line) : Node(Line);

    private sealed record ForNode(string Var, Expr List, List<Node> Body, int Line) : Node(Line);

    private sealed record SetNode(string Name, Expr Value, int Line) : Node(Line);

    private abstract record Expr;

    private sealed record Lit(object? Value) : Expr;

    private sealed record Var(string Name) : Expr;

    private sealed record ListExpr(List<Expr> Items) : Expr;

    private sealed record Attr(Expr Target, string Name) : Expr;

    private sealed record Index(Expr Target, Expr Key) : Expr;

    private sealed record Call(Expr Target, List<Expr> Args) : Expr;

    private sealed record Filter(Expr Value, string Name) : Expr;

    private sealed record Unary(string Op, Expr Value) : Expr;

    private sealed record Binary(string Op, Expr Left, Expr Right) : Expr;

    private sealed record Test(Expr Value, string Name, bool Negated) : Expr;

    private sealed class Parser(List<Tok> toks, string origin)
    {
        private int _i, _depth;

        public List<Node> Block(out string? endTag)
        {
            var nodes = new List<Node>();
            while (_i < toks.Count)
            {
                var t = toks[_i++];
                switch (t.Kind)
                {
                    case T.Text: nodes.Add(new TextNode(t.Body, t.Line)); break;
                    case T.Expr: nodes.Add(new OutputNode(new ExprParser(t.Body, origin, t.Line).Whole(), t.Line)); break;
                    default:
                        var word = FirstWord(t.Body);
                        switch (word)
                        {
                            case "endfor" or "endif" or "else" or "elif":
                                endTag = t.Body;
                                return nodes;
                            case "if" or "for":
                                if (++_depth > MaxNesting) throw new InvalidDataException($"{origin}: line {t.Line}: blocks nest more than {MaxNesting} deep");
                                nodes.Add(word == "if" ? If(t) : For(t));
                                _depth--;
                                break;
                            case "set": nodes.Add(Set(t)); break;
                            default: throw new NotSupportedException($"{origin}: line {t.Line}: {{% {word} %}} is not supported by this chat template renderer");
                        }
                        break;
                }
            }
            endTag = null;
            return nodes;
        }

        private static string FirstWord(string body)
        {
            int i = 0;
            while (i < body.Length && (char.IsLetterOrDigit(body[i]) || body[i] == '_')) i++;
            return body[..i];
        }

        private IfNode If(Tok t)
        {
            var branches = new List<(Expr?, List<Node>)>();
            Expr? cond = new ExprParser(t.Body[2..], origin, t.Line).Whole();
            while (true)
            {
                var body = Block(out var end);
                branches.Add((cond, body));
                var word = end is null ? null : FirstWord(end);
                if (word == "endif") return new IfNode(branches, t.Line);
                if (word == "elif") cond = new ExprParser(end![4..], origin, t.Line).Whole();
                else if (word == "else" && cond is not null) cond = null;
                else throw new InvalidDataException($"{origin}: line {t.Line}: {{% if %}} without its {{% endif %}}");
            }
        }

        private ForNode For(Tok t)
        {
            var p = new ExprParser(t.Body[3..], origin, t.Line);
            var name = p.Name();
            if (p.Peek() == ",") throw new NotSupportedException($"{origin}: line {t.Line}: unpacking in {{% for %}} is not supported by this chat template renderer");
            p.Keyword("in");
            var list = p.Expression();
            if (!p.AtEnd) throw new NotSupportedException($"{origin}: line {t.Line}: '{t.Body}' (for ... if / recursive) is not supported by this chat template renderer");
            var body = Block(out var end);
            if (end is null || FirstWord(end) != "endfor")
                throw new InvalidDataException($"{origin}: line {t.Line}: {{% for %}} without its {{% endfor %}}" + (end is null ? "" : $" ({{% {end} %}} is not supported inside for)"));
            return new ForNode(name, list, body, t.Line);
        }

        private SetNode Set(Tok t)
        {
            var p = new ExprParser(t.Body[3..], origin, t.Line);
            var name = p.Name();
            if (p.Peek() != "=") throw new NotSupportedException($"{origin}: line {t.Line}: '{t.Body}' (only {{% set name = value %}}) is not supported by this chat template renderer");
            p.Next();
            return new SetNode(name, p.Whole(), t.Line);
        }
    }

    private sealed class ExprParser
    {
        private readonly List<string> _t = [];
        private readonly string _origin;
        private readonly int _line;
        private int _i;

        public ExprParser(string s, string origin, int line)
        {
            _origin = origin;
            _line = line;
            int i = 0;
            while (i < s.Length)
            {
                char c = s[i];
                if (char.IsWhiteSpace(c)) { i++; continue; }
                if (c is '\'' or '"')
                {
                    var sb = new StringBuilder("\"");
                    int j = i + 1;
                    for (; j < s.Length && s[j] != c; j++)
                    {
                        if (s[j] == '\\' && j + 1 < s.Length)
                        {
                            j++;
                            sb.Append(s[j] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', var o => o });
                        }
                        else sb.Append(s[j]);
                    }
                    if (j >= s.Length) throw Error("a string is never closed");
                    _t.Add(sb.ToString());
                    i = j + 1;
                    continue;
                }
                if (char.IsLetter(c) || c == '_')
                {
                    int j = i;
                    while (j < s.Length && (char.IsLetterOrDigit(s[j]) || s[j] == '_')) j++;
                    _t.Add(s[i..j]);
                    i = j;
                    continue;
                }
                if (char.IsDigit(c))
                {
                    int j = i;
                    while (j < s.Length && (char.IsDigit(s[j]) || s[j] == '.')) j++;
                    _t.Add(s[i..j]);
                    i = j;
                    continue;
                }
                var two = i + 1 < s.Length ? s.Substring(i, 2) : "";
                if (two is "==" or "!=" or "<=" or ">=" or "**" or "//") { _t.Add(two); i += 2; continue; }
                _t.Add(c.ToString());
                i++;
            }
        }

        public bool AtEnd => _i >= _t.Count;

        public string? Peek() => _i < _t.Count ? _t[_i] : null;

        public string Next() => _i < _t.Count ? _t[_i++] : throw Error("the expression ends too early");

        private Exception Error(string why) => new InvalidDataException($"{_origin}: line {_line}: {why}");

        private Exception Unsupported(string what) => new NotSupportedException($"{_origin}: line {_line}: {what} is not supported by this chat template renderer");

        public string Name()
        {
            var n = Next();
            return IsName(n) ? n : throw Error($"expected a name, got '{n}'");
        }

        private static bool IsName(string s) => s.Length > 0 && (char.IsLetter(s[0]) || s[0] == '_');

        public void Keyword(string k)
        {
            if (Next() != k) throw Error($"expected '{k}'");
        }

        public Expr Whole()
        {
            var e = Expression();
            if (!AtEnd) throw Unsupported($"'{Peek()}' here");
            return e;
        }

        public Expr Expression()
        {
            Enter();
            try
            {
                var e = Or();
                if (Peek() == "if") throw Unsupported("the inline 'x if c else y'");
                return e;
            }
            finally
            {
                _depth--;
            }
        }

        // Nesting (parentheses, lists, not, unary minus) is bounded: a hostile template cannot exhaust the stack.
        private void Enter()
        {
            if (++_depth > MaxNesting) throw Error($"expressions nest more than {MaxNesting} deep");
        }

        private int _depth;

        private Expr Or()
        {
            var e = And();
            while (Peek() == "or") { Next(); e = new Binary("or", e, And()); }
            return e;
        }

        private Expr And()
        {
            var e = Not();
            while (Peek() == "and") { Next(); e = new Binary("and", e, Not()); }
            return e;
        }

        private Expr Not()
        {
            if (Peek() != "not") return Compare();
            Next();
            Enter();
            try
            {
                return new Unary("not", Not());
            }
            finally
            {
                _depth--;
            }
        }

        private Expr Compare()
        {
            var e = Additive();
            while (true)
            {
                var op = Peek();
                if (op is "==" or "!=" or "<" or ">" or "<=" or ">=") { Next(); e = new Binary(op, e, Additive()); }
                else if (op == "in") { Next(); e = new Binary("in", e, Additive()); }
                else if (op == "not" && _i + 1 < _t.Count && _t[_i + 1] == "in") { Next(); Next(); e = new Unary("not", new Binary("in", e, Additive())); }
                else if (op == "is")
                {
                    Next();
                    bool neg = Peek() == "not";
                    if (neg) Next();
                    var test = Name();
                    if (test is not ("defined" or "undefined" or "none" or "string" or "number" or "mapping" or "sequence" or "iterable"))
                        throw Unsupported($"the test 'is {test}'");
                    e = new Test(e, test, neg);
                }
                else return e;
            }
        }

        private Expr Additive()
        {
            var e = FilterExpr();
            while (Peek() is "+" or "~" or "-")
            {
                var op = Next();
                e = new Binary(op, e, FilterExpr());
            }
            return e;
        }

        private Expr FilterExpr()
        {
            var e = Postfix();
            while (Peek() == "|")
            {
                Next();
                var name = Name();
                if (name is not ("trim" or "length" or "upper" or "lower" or "string" or "tojson" or "count")) throw Unsupported($"the filter '{name}'");
                if (Peek() == "(") throw Unsupported($"arguments to the filter '{name}'");
                e = new Filter(e, name);
            }
            return e;
        }

        private Expr Postfix()
        {
            var e = Primary();
            while (true)
            {
                var p = Peek();
                if (p == ".") { Next(); e = new Attr(e, Name()); }
                else if (p == "[")
                {
                    Next();
                    if (Peek() == ":") throw Unsupported("slicing");
                    var key = Expression();
                    if (Peek() == ":") throw Unsupported("slicing");
                    if (Next() != "]") throw Error("expected ']'");
                    e = new Index(e, key);
                }
                else if (p == "(")
                {
                    Next();
                    var args = new List<Expr>();
                    while (Peek() != ")")
                    {
                        if (_i + 1 < _t.Count && _t[_i + 1] == "=" && IsName(_t[_i])) throw Unsupported("keyword arguments");
                        args.Add(Expression());
                        if (Peek() == ",") Next();
                        else if (Peek() != ")") throw Error("expected ')'");
                    }
                    Next();
                    e = new Call(e, args);
                }
                else return e;
            }
        }

        private Expr Primary()
        {
            var t = Next();
            if (t.StartsWith('"')) return new Lit(t[1..]);
            if (char.IsDigit(t[0]))
                return t.Contains('.') ? new Lit(double.Parse(t, CultureInfo.InvariantCulture)) : new Lit(long.Parse(t, CultureInfo.InvariantCulture));
            switch (t)
            {
                case "true" or "True": return new Lit(true);
                case "false" or "False": return new Lit(false);
                case "none" or "None": return new Lit(null);
                case "-":
                    Enter();
                    try
                    {
                        return new Unary("-", Postfix());
                    }
                    finally
                    {
                        _depth--;
                    }
                case "(":
                    var e = Expression();
                    if (Next() != ")") throw Unsupported("tuples");
                    return e;
                case "[":
                    var items = new List<Expr>();
                    while (Peek() != "]")
                    {
                        items.Add(Expression());
                        if (Peek() == ",") Next();
                        else if (Peek() != "]") throw Error("expected ']'");
                    }
                    Next();
                    return new ListExpr(items);
                case "{": throw Unsupported("dict literals");
            }
            if (IsName(t)) return new Var(t);
            throw Error($"unexpected '{t}'");
        }
    }

    // ---------------------------------------------------------------- renderer

    private sealed class Undefined
    {
        public static readonly Undefined Value = new();
    }

    private sealed class Renderer(string origin, StringBuilder output)
    {
        private int _steps;

        public void Run(List<Node> nodes, List<Dictionary<string, object?>> scopes)
        {
            foreach (var node in nodes)
            {
                if (++_steps > MaxSteps) throw new InvalidDataException($"{origin}: the rendering takes too many steps");
                switch (node)
                {
                    case TextNode t: Append(t.Text); break;
                    case OutputNode o: Append(Str(Eval(o.Value, scopes, o.Line), o.Line)); break;
                    case SetNode s: scopes[^1][s.Name] = Eval(s.Value, scopes, s.Line); break;
                    case IfNode i:
                        foreach (var (cond, body) in i.Branches)
                            if (cond is null || Truthy(Eval(cond, scopes, i.Line)))
                            {
                                Run(body, scopes);
                                break;
                            }
                        break;
                    case ForNode f:
                        var list = Eval(f.List, scopes, f.Line) switch
                        {
                            List<object?> l => l,
                            string str => str.Select(c => (object?)c.ToString()).ToList(),
                            Undefined or null => [],
                            var other => throw new InvalidDataException($"{origin}: line {f.Line}: cannot loop over {TypeName(other)}"),
                        };
                        // A for loop's scope: assignments inside stay inside (Jinja's scoping).
                        for (int k = 0; k < list.Count; k++)
                        {
                            var scope = new Dictionary<string, object?>(StringComparer.Ordinal)
                            {
                                [f.Var] = list[k],
                                ["loop"] = new Dictionary<string, object?>
                                {
                                    ["index0"] = (long)k, ["index"] = (long)k + 1, ["first"] = k == 0, ["last"] = k == list.Count - 1,
                                    ["length"] = (long)list.Count, ["revindex"] = (long)(list.Count - k), ["revindex0"] = (long)(list.Count - k - 1),
                                },
                            };
                            scopes.Add(scope);
                            try { Run(f.Body, scopes); }
                            finally { scopes.RemoveAt(scopes.Count - 1); }
                        }
                        break;
                }
            }
        }

        private void Append(string s)
        {
            if (output.Length + s.Length > MaxOutput) throw new InvalidDataException($"{origin}: the rendering is longer than {MaxOutput} characters");
            output.Append(s);
        }

        private static string TypeName(object? v) => v switch
        {
            null => "none",
            Undefined => "an undefined value",
            string => "a string",
            bool => "a boolean",
            long or double => "a number",
            List<object?> => "a list",
            _ => "a mapping",
        };

        private string Str(object? v, int line) => v switch
        {
            null => "None",
            Undefined => "",
            string s => s,
            bool b => b ? "True" : "False",
            long l => l.ToString(CultureInfo.InvariantCulture),
            double d => d.ToString("R", CultureInfo.InvariantCulture),
            _ => throw new NotSupportedException($"{origin}: line {line}: printing {TypeName(v)} is not supported by this chat template renderer"),
        };

        private static bool Truthy(object? v) => v switch
        {
            null or Undefined => false,
            bool b => b,
            string s => s.Length > 0,
            long l => l != 0,
            double d => d != 0,
            List<object?> l => l.Count > 0,
            Dictionary<string, object?> d => d.Count > 0,
            _ => true,
        };

        private object? Eval(Expr e, List<Dictionary<string, object?>> scopes, int line)
        {
            switch (e)
            {
                case Lit l: return l.Value;
                case Var v:
                    for (int i = scopes.Count - 1; i >= 0; i--)
                        if (scopes[i].TryGetValue(v.Name, out var value)) return value;
                    return v.Name == "raise_exception" ? v : Undefined.Value;
                case ListExpr list: return list.Items.Select(x => Eval(x, scopes, line)).ToList();
                case Attr a: return Member(Eval(a.Target, scopes, line), a.Name, line);
                case Index ix:
                    var target = Eval(ix.Target, scopes, line);
                    var key = Eval(ix.Key, scopes, line);
                    if (key is string ks) return Member(target, ks, line);
                    if (key is long n && target is List<object?> lst)
                    {
                        if (n < 0) n += lst.Count;
                        return n >= 0 && n < lst.Count ? lst[(int)n] : Undefined.Value;
                    }
                    throw new InvalidDataException($"{origin}: line {line}: cannot index {TypeName(target)} with {TypeName(key)}");
                case Call c:
                    if (c.Target is Var { Name: "raise_exception" })
                    {
                        var message = c.Args.Count > 0 ? Str(Eval(c.Args[0], scopes, line), line) : "raise_exception";
                        throw new InvalidDataException($"{origin}: the template refused the conversation: {message}");
                    }
                    if (c.Target is Attr { Name: "strip" or "rstrip" or "lstrip" } m && c.Args.Count == 0 && Eval(m.Target, scopes, line) is string str)
                        return m.Name == "strip" ? str.Trim() : m.Name == "rstrip" ? str.TrimEnd() : str.TrimStart();
                    throw new NotSupportedException($"{origin}: line {line}: this call is not supported by this chat template renderer");
                case Filter f:
                    var fv = Eval(f.Value, scopes, line);
                    return f.Name switch
                    {
                        "trim" => Str(fv, line).Trim(),
                        "upper" => Str(fv, line).ToUpperInvariant(),
                        "lower" => Str(fv, line).ToLowerInvariant(),
                        "string" => Str(fv, line),
                        "length" or "count" => fv switch
                        {
                            string s => (long)s.Length,
                            List<object?> l => (long)l.Count,
                            Dictionary<string, object?> d => (long)d.Count,
                            _ => throw new InvalidDataException($"{origin}: line {line}: {TypeName(fv)} has no length"),
                        },
                        _ => JsonSerializer.Serialize(fv is Undefined ? null : fv),
                    };
                case Unary u:
                    var uv = Eval(u.Value, scopes, line);
                    return u.Op == "not" ? !Truthy(uv) : uv switch
                    {
                        long l => -l,
                        double d => -d,
                        _ => throw new InvalidDataException($"{origin}: line {line}: cannot negate {TypeName(uv)}"),
                    };
                case Test t:
                    var tv = Eval(t.Value, scopes, line);
                    bool r = t.Name switch
                    {
                        "defined" => tv is not Undefined,
                        "undefined" => tv is Undefined,
                        "none" => tv is null,
                        "string" => tv is string,
                        "number" => tv is long or double,
                        "mapping" => tv is Dictionary<string, object?>,
                        _ => tv is List<object?> or string or Dictionary<string, object?>,
                    };
                    return r != t.Negated;
                case Binary b:
                    if (b.Op == "and") return Truthy(Eval(b.Left, scopes, line)) && Truthy(Eval(b.Right, scopes, line));
                    if (b.Op == "or")
                    {
                        var left = Eval(b.Left, scopes, line);
                        return Truthy(left) ? left : Eval(b.Right, scopes, line);
                    }
                    var x = Eval(b.Left, scopes, line);
                    var y = Eval(b.Right, scopes, line);
                    return b.Op switch
                    {
                        "~" => Str(x, line) is var a && Str(y, line) is var c && Bounded(a.Length + (long)c.Length, line) ? a + c : null,
                        "+" when x is string || y is string => x is string sx && y is string sy ? Bounded(sx.Length + (long)sy.Length, line) ? sx + sy : null
                            : throw new InvalidDataException($"{origin}: line {line}: cannot add {TypeName(x)} and {TypeName(y)}"),
                        "+" when x is long lx && y is long ly => lx + ly,
                        "+" when x is List<object?> la && y is List<object?> lb => Bounded(la.Count + (long)lb.Count, line) ? la.Concat(lb).ToList() : null,
                        "-" when x is long lx && y is long ly => lx - ly,
                        "==" => Same(x, y),
                        "!=" => !Same(x, y),
                        "in" => y switch
                        {
                            string s when x is string sub => s.Contains(sub, StringComparison.Ordinal),
                            List<object?> l => l.Any(item => Same(item, x)),
                            Dictionary<string, object?> d when x is string k => d.ContainsKey(k),
                            _ => false,
                        },
                        "<" or ">" or "<=" or ">=" => CompareNumbers(b.Op, x, y, line),
                        _ => throw new InvalidDataException($"{origin}: line {line}: cannot apply '{b.Op}' to {TypeName(x)} and {TypeName(y)}"),
                    };
            }
            throw new NotSupportedException($"{origin}: line {line}: this expression is not supported by this chat template renderer");
        }

        private bool Bounded(long length, int line) =>
            length <= MaxOutput ? true : throw new InvalidDataException($"{origin}: line {line}: a value longer than {MaxOutput} is refused");

        private bool CompareNumbers(string op, object? x, object? y, int line)
        {
            double a = x switch { long l => l, double d => d, _ => throw new InvalidDataException($"{origin}: line {line}: cannot compare {TypeName(x)}") };
            double b = y switch { long l => l, double d => d, _ => throw new InvalidDataException($"{origin}: line {line}: cannot compare {TypeName(y)}") };
            return op switch { "<" => a < b, ">" => a > b, "<=" => a <= b, _ => a >= b };
        }

        private static bool Same(object? x, object? y) => (x, y) switch
        {
            (Undefined, Undefined) or (null, null) => true,
            (long a, double b) => a == b,
            (double a, long b) => a == b,
            _ => Equals(x, y),
        };

        private object? Member(object? target, string name, int line) => target switch
        {
            Dictionary<string, object?> d => d.TryGetValue(name, out var v) ? v : Undefined.Value,
            Undefined or null => Undefined.Value,
            _ => throw new InvalidDataException($"{origin}: line {line}: {TypeName(target)} has no attribute '{name}'"),
        };
    }
}
