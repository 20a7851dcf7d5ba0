"""RAG with LangChain on BGE-M3 hybrid search, fully offline.

The LCEL chain is ``retriever | format_docs | prompt | llm | parser``: an M3Retriever
(dense + sparse candidates, ColBERT rerank, from one forward pass per text) feeds a prompt,
and a fake chat model from langchain-core stands in for the LLM so that it runs without a
network or an API key. Swap ``llm`` for any real chat model.

    python examples/langchain_rag.py                       # the packaged offline model "m3-mini"
    python examples/langchain_rag.py --model BAAI/bge-m3   # real BGE-M3 (downloads once)
    python examples/langchain_rag.py --model ./some/checkpoint --query "..."
"""

from __future__ import annotations

import argparse

from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from m3_rag_langchain import BGEM3Embeddings, M3Retriever, M3VectorStore

CORPUS = [
    ("qdrant.md", "Qdrant stores dense, sparse and multi-vectors per point and can fuse their rankings."),
    ("bge-m3.md", "BGE-M3 produces a dense vector, lexical weights and ColBERT vectors in one forward pass."),
    ("colbert.md", "ColBERT late interaction scores a document by the best match of every query token."),
    ("rrf.md", "Reciprocal rank fusion merges ranked lists by summing one over rank plus a constant."),
    ("paris.md", "Paris is the capital of France and lies on the Seine."),
    ("tea.md", "Green tea is brewed at about 80 degrees Celsius for two to three minutes."),
]

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question using only this context. Cite sources in brackets.\n\n{context}"),
        ("human", "{question}"),
    ]
)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{doc.metadata['source']}] {doc.page_content}" for doc in docs)


def build_chain(retriever: M3Retriever, llm):
    """``retriever | format_docs | prompt | llm | parser``, with the question passed alongside."""
    return (
        {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()}
        | PROMPT
        | llm
        | StrOutputParser()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="m3-mini", help="'m3-mini', a hub id or a local checkpoint directory")
    parser.add_argument("--query", default="How does ColBERT score a document?")
    parser.add_argument("--k", type=int, default=3, help="documents to retrieve")
    parser.add_argument("--mode", default="hybrid+rerank", help="dense, sparse, hybrid, hybrid+rerank or m3")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    embeddings = BGEM3Embeddings(model_name=args.model, device=args.device)
    store = M3VectorStore.from_texts(
        [text for _, text in CORPUS],
        embeddings,
        metadatas=[{"source": source} for source, _ in CORPUS],
        location=":memory:",
    )
    # score_key puts each hit's score into (a copy of) its metadata, for printing below.
    retriever = M3Retriever(vectorstore=store, k=args.k, mode=args.mode, score_key="score")
    llm = FakeListChatModel(responses=["(offline stand-in for an LLM: it would answer from the sources below)"])

    print(f"Question: {args.query}")
    print(f"Answer:   {build_chain(retriever, llm).invoke(args.query)}")
    print(f"Sources ({args.mode}, top {args.k}):")
    for doc in retriever.invoke(args.query):
        print(f"  {doc.metadata['score']:.4f}  [{doc.metadata['source']}] {doc.page_content}")
    store.close()


if __name__ == "__main__":
    main()
